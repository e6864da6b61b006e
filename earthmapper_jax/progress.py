"""Progress reporting for every long job: one function, right on a terminal and in a log file.

    bar = progress(total, desc="translate", unit="tile", enabled=True, initial=0)
    bar.update(n=1); bar.set_postfix({"loss": 0.3}); bar.write("a line"); bar.close()
    (also a context manager)

On a terminal it is a tqdm bar. Off a terminal (CI logs, `nohup`, a pipe) redrawing a bar
leaves thousands of carriage-return frames, so instead one plain line is printed every
`every_s` seconds (default 30, or $EARTHMAPPER_PROGRESS_EVERY) and one at the end:
    translate: 120/1000 tile (12%), 3.4 tile/s, eta 4m18s, loss 0.3
enabled=False gives an object that does nothing and starts no thread (tqdm starts a monitor
thread even when disabled, which matters before forking worker processes).
"""

from __future__ import annotations

import os
import sys
import time


class _Silent:
    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def write(self, msg):
        print(msg, file=sys.stderr, flush=True)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _duration(s: float) -> str:
    s = int(max(s, 0))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class _Lines(_Silent):
    """A progress report of plain lines, at most one every `every_s` seconds."""

    def __init__(self, total, desc, unit, initial, every_s, stream):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s, self.stream = every_s, stream
        self.start = self.last = time.monotonic()
        self.n0 = initial
        self.postfix = ""
        self.closed = False

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = (self.n - self.n0) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"eta {_duration((self.total - self.n) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            print(self._line(), file=self.stream, flush=True)

    def set_postfix(self, postfix=None, **kwargs):
        items = dict(postfix or {}, **kwargs)
        self.postfix = ", ".join(f"{k} {v}" for k, v in items.items())

    def write(self, msg):
        print(msg, file=self.stream, flush=True)

    def close(self):
        if not self.closed:
            self.closed = True
            print(self._line(), file=self.stream, flush=True)


def progress(total: int | None = None, *, desc: str = "", unit: str = "it",
             enabled: bool = True, initial: int = 0, every_s: float | None = None,
             stream=None):
    """A progress reporter (see module doc)."""
    if not enabled:
        return _Silent()
    stream = stream if stream is not None else sys.stderr
    if every_s is None:
        every_s = float(os.environ.get("EARTHMAPPER_PROGRESS_EVERY", 30))
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return _Lines(total, desc, unit, initial, every_s, stream)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc or None, unit=unit, file=stream,
                dynamic_ncols=True, smoothing=0.1)
