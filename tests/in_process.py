"""Running a command's `main` inside the test process, as the command line would."""


def run_main(main, capsys, *argv):
    """`main([str(a) for a in argv])` with argparse's SystemExit caught: (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err
