"""User-facing errors: the CLI prints these as one line, never as a traceback."""

import contextlib
import os
import sys
import tempfile
import time


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


@contextlib.contextmanager
def quiet_on_failure(settle_s: float = 0.1, max_wait_s: float = 2.0):
    """Holds what is written to fd 2 inside the block. On success it is passed on unchanged; on
    an exception it is dropped after the writes have settled (no new byte for `settle_s`, at most
    `max_wait_s`): a failed Orbax/TensorStore restore leaves reads in flight whose threads print
    "Event loop is closed" tracebacks at C level (no Python hook sees them) shortly after the
    exception, and the caller's one-line error must not come with them."""
    try:
        sys.stderr.flush()
        fd = sys.stderr.fileno()
        real = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (captured by a test runner)
        yield
        return
    hold = tempfile.TemporaryFile()
    os.dup2(hold.fileno(), fd)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        size, quiet_since, start = -1, time.monotonic(), time.monotonic()
        while time.monotonic() - start < max_wait_s:
            now = os.fstat(hold.fileno()).st_size
            if now != size:
                size, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= settle_s:
                break
            time.sleep(0.02)
        raise
    finally:
        sys.stderr.flush()
        os.dup2(real, fd)
        os.close(real)
        if not failed:
            hold.seek(0)
            kept = hold.read()
            if kept:
                os.write(fd, kept)
        hold.close()
