"""Running a command's `main` inside the test process, as the command line would."""


def run_main(main, capsys, *argv):
    """`main([str(a) for a in argv])` with argparse's SystemExit caught: (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(result, *needles):
    """`run_main`'s result is a user error: exit status 2, one "error: " line on stderr holding every needle,
    nothing on stdout, no traceback."""
    code, out, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
