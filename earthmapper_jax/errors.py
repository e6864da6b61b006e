"""User-facing errors: the CLI prints these as one line, never as a traceback."""

import os
import sys


class EarthMapperError(Exception):
    """Something the user gave is wrong; the message says what and what was expected."""


class CheckpointError(EarthMapperError):
    """A checkpoint is missing, truncated, or of another architecture."""


class InputError(EarthMapperError):
    """An image, coordinate or argument has the wrong shape, range or value."""


class DataError(EarthMapperError):
    """A dataset record is corrupt, undecodable or inconsistent."""


def print_error_line(line: str, *, last: bool = True) -> None:
    """Prints the one error line of a failing command to stderr. `last`: the process is about
    to exit, so fd 2 then points at /dev/null and library threads still running (Orbax /
    TensorStore reads completing into a closed asyncio loop after a failed restore print
    "Event loop is closed" tracebacks) cannot add lines after it; in-process callers (tests)
    pass last=False."""
    if not last:
        print(line, file=sys.stderr, flush=True)
        return
    # fd 2 goes to /dev/null *before* the line is written (to a copy of the real fd 2), so a
    # library thread cannot slip a traceback in between the line and the redirect.
    try:
        sys.stderr.flush()
        real = os.dup(sys.stderr.fileno())
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (captured, closed): plain print
        print(line, file=sys.stderr, flush=True)
        return
    os.write(real, (line + "\n").encode("utf-8", "replace"))
    os.close(real)
