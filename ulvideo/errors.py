"""The one error handler of every entry point (`ulvideo`, the recipes,
`python -m ulvideo.evaluate.fvd`): a user error (a missing or corrupt file, a config that does not
match its weights, an empty dataset, an unreadable video, a bad flag value) is one line on stderr,
naming the problem and the fix, and exit status 2; `--debug` anywhere on the command line shows the
traceback instead. Standard library only, so that any module can use it."""

import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, OSError, RuntimeError, KeyError)


def run_main(prog: str, main: Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """`main(argv without --debug)`; 0, or 2 after printing a user error as one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        main([a for a in argv if a != "--debug"])
    except USER_ERRORS as err:
        if debug:
            raise
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"{prog}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0
