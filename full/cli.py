"""How every command line of the project reports a user's mistake: one line, exit status 2."""
from __future__ import annotations

import sys

from full.errors import SidError

# Errors that mean the input was wrong (a missing file, a bad value), not that the code is.
USER_ERRORS = (SidError, ValueError, OSError)


def report_error(error: BaseException) -> int:
    """Print ``error: <message>`` as one line on stderr and return the exit status 2."""
    print("error: " + " ".join(str(error).split("\n")), file=sys.stderr)
    return 2
