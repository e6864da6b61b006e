"""Random-access Grain data source over TFRecord shards (through their offset indexes).

Random access gives an exact global shuffle, an exact per-host partition and a resumable,
deterministic order (Grain's MapDataset), at the price of one `pread` per record.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import NamedTuple

import numpy as np

from earthmapper_jax.data import tfrecord
from earthmapper_jax.errors import DataError

log = logging.getLogger(__name__)

# Records skipped under on_error="skip", by reason, in this process (workers count their own).
SKIPPED: collections.Counter = collections.Counter()


def note_skip(reason: str, message: str) -> None:
    SKIPPED[reason] += 1
    log.warning("skipping %s", message)


class RawRecord(NamedTuple):
    data: bytes
    shard: str  # file name, for error messages
    index: int  # record index within the shard


class TFRecordSource:
    """`len()` and `[i]` over all records of `paths` (in order); CRCs checked on every read.

    Picklable (file descriptors are reopened per process) and thread-safe (pread)."""

    def __init__(self, paths, *, verify: bool = True, on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self._paths = [str(p) for p in paths]
        self._offsets = [tfrecord.load_offsets(p) for p in self._paths]
        self._starts = np.cumsum([0] + [len(o) - 1 for o in self._offsets])
        self._verify, self._on_error = verify, on_error
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:  # Grain keys checkpoints on it
        return f"TFRecordSource(paths={self._paths!r}, verify={self._verify})"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fds"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def locate(self, i: int) -> tuple[int, int]:
        """(shard number, record index within it) of global record i."""
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} out of range [0, {len(self)})")
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return k, int(i - self._starts[k])

    def _fd(self, k: int) -> int:
        if self._pid != os.getpid():  # forked: the parent's descriptors are not ours to share
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(k)
        if fd is None:
            with self._lock:
                fd = self._fds.get(k)
                if fd is None:
                    fd = self._fds[k] = os.open(self._paths[k], os.O_RDONLY)
        return fd

    def __getitem__(self, i: int) -> RawRecord | None:
        k, j = self.locate(int(i))
        offs = self._offsets[k]
        name = os.path.basename(self._paths[k])
        try:
            data = tfrecord.read_at(self._fd(k), name, j, int(offs[j]), int(offs[j + 1]), self._verify)
        except DataError as e:
            if self._on_error == "skip":
                note_skip("corrupt_record", str(e))
                return None
            raise
        return RawRecord(data, name, j)

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
