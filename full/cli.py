"""How every command line of the project reports a user's mistake: one line, exit status 2."""
from __future__ import annotations

import argparse
import sys

from full.errors import SidError

# Errors that mean the input was wrong (a missing file, a bad value), not that the code is. Code raises them
# only after checking the input explicitly; a ValueError or OSError from anywhere else is a bug and keeps
# its traceback.
USER_ERRORS = (SidError,)


def report_error(error: BaseException) -> int:
    """Print ``error: <message>`` as one line on stderr and return the exit status 2."""
    print("error: " + " ".join(str(error).split("\n")), file=sys.stderr)
    return 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's conventions: --help keeps the docstring's line breaks, and a malformed
    command line is reported in one line (exit status 2) that points at --help instead of printing the usage."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)
