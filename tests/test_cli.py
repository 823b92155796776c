"""Every command line reports a malformed command line in one line, and explains itself with --help."""
import subprocess
import sys

import pytest

MODULES = ["toy", "full.train", "full.generate", "full.metrics", "full.checkpoint", "full.bench", "full.dataset",
           "full.train_teacher", "full.mnist_classifier"]


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", MODULES)
def test_malformed_command_line_is_one_line_and_points_at_help(module):
    result = run(module, "--no-such-option")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr  # no usage dump, no traceback
    assert lines[0].endswith(f"(see python -m {module} --help)")


@pytest.mark.parametrize("module", MODULES)
def test_help_describes_the_command(module):
    result = run(module, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: python -m {module}")
    assert len(result.stdout.splitlines()) > 5
