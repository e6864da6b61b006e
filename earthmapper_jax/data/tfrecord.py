"""TFRecord framing without TensorFlow, with every CRC checked on read.

A record on disk is ``uint64 length | uint32 masked_crc(length) | data | uint32 masked_crc(data)``
(little-endian; masked CRC-32C as TensorFlow defines it), so TF tooling reads our shards and we
read theirs. Grain's own TFRecord reader does not check CRCs; this one does, and names the
shard and record index when one is wrong.

Beside each shard we keep an offset index (``<shard>.idx``: little-endian uint64 offsets of
its records followed by the file size) for random access, i.e. exact global shuffling.
"""

from __future__ import annotations

import os
import struct
from typing import Iterator

import crc32c
import numpy as np

from earthmapper_jax.errors import DataError
from earthmapper_jax.io import files

HEADER_BYTES = 12  # uint64 length + uint32 crc
FOOTER_BYTES = 4
INDEX_SUFFIX = ".idx"
_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def masked_crc(data: bytes) -> int:
    """TensorFlow's masked CRC-32C (Castagnoli) of `data`."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record as it is written to the file."""
    header = _U64.pack(len(data))
    return header + _U32.pack(masked_crc(header)) + data + _U32.pack(masked_crc(data))


def _where(path, index, offset) -> str:
    return f"{os.path.basename(str(path))}: record {index} (byte offset {offset})"


def unframe(buf: bytes, path, index: int, offset: int, verify: bool = True) -> bytes:
    """The data of one complete framed record `buf`; raises DataError naming shard and record
    on a truncated record or a CRC mismatch."""
    if len(buf) < HEADER_BYTES + FOOTER_BYTES:
        raise DataError(f"{_where(path, index, offset)}: truncated record header")
    (length,) = _U64.unpack_from(buf, 0)
    if verify and _U32.unpack_from(buf, 8)[0] != masked_crc(buf[:8]):
        raise DataError(f"{_where(path, index, offset)}: length CRC mismatch (corrupt shard)")
    if len(buf) != HEADER_BYTES + length + FOOTER_BYTES:
        raise DataError(
            f"{_where(path, index, offset)}: record is {len(buf)} bytes, its header says "
            f"{HEADER_BYTES + length + FOOTER_BYTES} (truncated or corrupt shard)"
        )
    data = buf[HEADER_BYTES:HEADER_BYTES + length]
    if verify and _U32.unpack_from(buf, HEADER_BYTES + length)[0] != masked_crc(data):
        raise DataError(f"{_where(path, index, offset)}: data CRC mismatch (corrupt record)")
    return bytes(data)


def iter_records(path, *, verify: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yields (offset, data) for each record of a shard, in order, checking CRCs."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset, index = 0, 0
        while offset < size:
            header = f.read(HEADER_BYTES)
            if len(header) < HEADER_BYTES:
                raise DataError(f"{_where(path, index, offset)}: truncated record header")
            (length,) = _U64.unpack_from(header, 0)
            if verify and _U32.unpack_from(header, 8)[0] != masked_crc(header[:8]):
                raise DataError(f"{_where(path, index, offset)}: length CRC mismatch (corrupt shard)")
            rest = f.read(length + FOOTER_BYTES)
            yield offset, unframe(header + rest, path, index, offset, verify)
            offset += HEADER_BYTES + length + FOOTER_BYTES
            index += 1


def scan_offsets(path) -> np.ndarray:
    """Offsets of every record plus the file size (uint64, N + 1), reading headers only."""
    size = os.path.getsize(path)
    offsets = []
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            header = f.read(HEADER_BYTES)
            if len(header) < HEADER_BYTES:
                raise DataError(f"{_where(path, len(offsets), offset)}: truncated record header")
            if _U32.unpack_from(header, 8)[0] != masked_crc(header[:8]):
                raise DataError(f"{_where(path, len(offsets), offset)}: length CRC mismatch (corrupt shard)")
            offsets.append(offset)
            offset += HEADER_BYTES + _U64.unpack_from(header, 0)[0] + FOOTER_BYTES
            f.seek(offset)
    if offset != size:
        raise DataError(f"{_where(path, len(offsets) - 1, offsets[-1])}: truncated record (file ends early)")
    offsets.append(size)
    return np.asarray(offsets, np.uint64)


def write_index(index_path, offsets: np.ndarray) -> None:
    """Writes an offset index atomically."""
    files.write_bytes(index_path, np.asarray(offsets, "<u8").tobytes())


def load_offsets(path) -> np.ndarray:
    """The shard's offset index: from `<path>.idx` when it matches the file, else scanned."""
    idx = f"{path}{INDEX_SUFFIX}"
    if os.path.exists(idx):
        offsets = np.fromfile(idx, "<u8").astype(np.uint64)
        if len(offsets) >= 1 and int(offsets[-1]) == os.path.getsize(path) and int(offsets[0]) == 0:
            return offsets
    return scan_offsets(path)


def read_at(fd: int, path, index: int, start: int, end: int, verify: bool = True) -> bytes:
    """Record `index` of an open shard (fd), spanning bytes [start, end); thread-safe (pread)."""
    buf = os.pread(fd, end - start, start)
    return unframe(buf, path, index, start, verify)
