"""TFRecord framing, byte by byte: every way a shard can be damaged gives a DataError naming the
shard, the record index and its byte offset; CRCs are checked unless a caller opts out; the
offset index is used only when it matches its shard. Pure Python on hand-made shards (fast)."""

import os
import re

import numpy as np
import pytest

from earthmapper_jax.data import tfrecord
from earthmapper_jax.errors import DataError

RECORDS = [b"a", b"hello world", b"", b"\x00" * 40]


def _shard(tmp_path, records=RECORDS, name="s.tfrecord"):
    path = tmp_path / name
    path.write_bytes(b"".join(tfrecord.frame(r) for r in records))
    return str(path)


def _offsets(records=RECORDS):
    out, o = [0], 0
    for r in records:
        o += 12 + len(r) + 4
        out.append(o)
    return out


def _flip(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x01]))


def _msg(path, index, offset, what):
    return re.escape(f"{os.path.basename(path)}: record {index} (byte offset {offset}): {what}")


def test_frame_layout_written_out():
    framed = tfrecord.frame(b"hi")
    assert len(framed) == tfrecord.HEADER_BYTES + 2 + tfrecord.FOOTER_BYTES == 18
    assert framed[:8] == (2).to_bytes(8, "little")
    assert int.from_bytes(framed[8:12], "little") == tfrecord.masked_crc(framed[:8])
    assert framed[12:14] == b"hi"
    assert int.from_bytes(framed[14:], "little") == tfrecord.masked_crc(b"hi")
    # TensorFlow's masked CRC of the empty string (crc32c(b"") == 0): rotate, add the delta
    assert tfrecord.masked_crc(b"") == 0xA282EAD8


def test_iter_records_yields_offsets_and_data(tmp_path):
    path = _shard(tmp_path)
    got = list(tfrecord.iter_records(path))
    assert [d for _, d in got] == RECORDS
    assert [o for o, _ in got] == _offsets()[:-1]
    assert list(tfrecord.iter_records(_shard(tmp_path, [], "empty"))) == []


def test_scan_and_index_roundtrip(tmp_path):
    path = _shard(tmp_path)
    offsets = tfrecord.scan_offsets(path)
    assert offsets.dtype == np.uint64
    np.testing.assert_array_equal(offsets, _offsets())
    tfrecord.write_index(path + tfrecord.INDEX_SUFFIX, offsets)
    raw = open(path + tfrecord.INDEX_SUFFIX, "rb").read()
    assert raw == np.asarray(_offsets(), "<u8").tobytes()  # little-endian uint64, size last
    np.testing.assert_array_equal(tfrecord.load_offsets(path), _offsets())
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, r in enumerate(RECORDS):
            assert tfrecord.read_at(fd, path, i, int(offsets[i]), int(offsets[i + 1])) == r
    finally:
        os.close(fd)


def test_a_stale_index_is_not_trusted(tmp_path):
    path = _shard(tmp_path)
    idx = path + tfrecord.INDEX_SUFFIX
    # the shard was rewritten with more records after the index was made: size does not match
    tfrecord.write_index(idx, np.asarray(_offsets(RECORDS[:2]), np.uint64))
    np.testing.assert_array_equal(tfrecord.load_offsets(path), _offsets())
    # right size, but not starting at 0: rebuilt by scanning
    bad = np.asarray(_offsets(), np.uint64)
    bad[0] = 5
    tfrecord.write_index(idx, bad)
    np.testing.assert_array_equal(tfrecord.load_offsets(path), _offsets())
    # an empty index file
    open(idx, "wb").close()
    np.testing.assert_array_equal(tfrecord.load_offsets(path), _offsets())
    # a matching index is used as it is (it is not rescanned: a fake middle offset survives)
    fake = np.asarray(_offsets(), np.uint64)
    fake[1] = 3
    tfrecord.write_index(idx, fake)
    np.testing.assert_array_equal(tfrecord.load_offsets(path), fake)


@pytest.mark.parametrize("index", [0, 1, 3])
def test_a_damaged_length_names_record_and_offset(tmp_path, index):
    path = _shard(tmp_path)
    off = _offsets()[index]
    _flip(path, off + 1)  # a length byte: its CRC no longer matches
    want = _msg(path, index, off, "length CRC mismatch (corrupt shard)")
    with pytest.raises(DataError, match=want):
        list(tfrecord.iter_records(path))
    with pytest.raises(DataError, match=want):
        tfrecord.scan_offsets(path)


def test_a_damaged_length_crc_is_caught_by_read_at(tmp_path):
    path = _shard(tmp_path)
    off = _offsets()
    _flip(path, off[1] + 9)  # the length's CRC itself
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(DataError, match=_msg(path, 1, off[1], "length CRC mismatch")):
            tfrecord.read_at(fd, path, 1, off[1], off[2])
        # a caller that opts out of verification gets the bytes
        assert tfrecord.read_at(fd, path, 1, off[1], off[2], verify=False) == RECORDS[1]
    finally:
        os.close(fd)


@pytest.mark.parametrize("index", [1, 3])
def test_a_damaged_payload_names_record_and_offset(tmp_path, index):
    path = _shard(tmp_path)
    off = _offsets()
    _flip(path, off[index] + 12 + 2)  # a data byte
    want = _msg(path, index, off[index], "data CRC mismatch (corrupt record)")
    with pytest.raises(DataError, match=want):
        list(tfrecord.iter_records(path))
    # the headers are intact: scanning finds every record
    np.testing.assert_array_equal(tfrecord.scan_offsets(path), off)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(DataError, match=want):
            tfrecord.read_at(fd, path, index, off[index], off[index + 1])
        damaged = tfrecord.read_at(fd, path, index, off[index], off[index + 1], verify=False)
        assert damaged != RECORDS[index] and len(damaged) == len(RECORDS[index])
    finally:
        os.close(fd)
    # unverified iteration reads through the damage
    assert len(list(tfrecord.iter_records(path, verify=False))) == len(RECORDS)


def test_damaged_data_crc_footer(tmp_path):
    path = _shard(tmp_path)
    off = _offsets()
    _flip(path, off[2] - 1)  # the last byte of record 1's data CRC
    with pytest.raises(DataError, match=_msg(path, 1, off[1], "data CRC mismatch")):
        list(tfrecord.iter_records(path))


def test_truncation_inside_a_header(tmp_path):
    path = _shard(tmp_path)
    off = _offsets()
    os.truncate(path, off[3] + 5)  # 5 bytes of record 3's header remain
    want = _msg(path, 3, off[3], "truncated record header")
    with pytest.raises(DataError, match=want):
        list(tfrecord.iter_records(path))
    with pytest.raises(DataError, match=want):
        tfrecord.scan_offsets(path)


def test_truncation_inside_a_record(tmp_path):
    path = _shard(tmp_path)
    off = _offsets()
    os.truncate(path, off[4] - 3)  # the last record loses its last 3 bytes
    with pytest.raises(DataError, match=_msg(path, 3, off[3], "truncated record (file ends early)")):
        tfrecord.scan_offsets(path)
    full = 12 + len(RECORDS[3]) + 4
    with pytest.raises(DataError, match=_msg(path, 3, off[3],
                                             f"record is {full - 3} bytes, its header says {full}")):
        list(tfrecord.iter_records(path))


def test_unframe_checks_sizes(tmp_path):
    framed = tfrecord.frame(b"xyz")
    assert tfrecord.unframe(framed, "p", 0, 0) == b"xyz"
    assert isinstance(tfrecord.unframe(memoryview(framed), "p", 0, 0), bytes)
    with pytest.raises(DataError, match=re.escape("p: record 2 (byte offset 7): truncated record header")):
        tfrecord.unframe(framed[:15], "p", 2, 7)
    # 16 bytes is a complete empty record, 15 is not
    assert tfrecord.unframe(tfrecord.frame(b""), "p", 0, 0) == b""
    with pytest.raises(DataError, match="record is 18 bytes, its header says 19"):
        tfrecord.unframe(framed[:18], "p", 0, 0)
    with pytest.raises(DataError, match="record is 20 bytes, its header says 19"):
        tfrecord.unframe(framed + b"!", "p", 0, 0)


def test_unframe_verifies_by_default(tmp_path):
    bad = bytearray(tfrecord.frame(b"payload"))
    bad[13] ^= 0x01
    with pytest.raises(DataError, match="data CRC mismatch"):
        tfrecord.unframe(bytes(bad), "p", 0, 0)
    assert tfrecord.unframe(bytes(bad), "p", 0, 0, verify=False) != b"payload"
    bad = bytearray(tfrecord.frame(b"payload"))
    bad[9] ^= 0x01
    with pytest.raises(DataError, match="length CRC mismatch"):
        tfrecord.unframe(bytes(bad), "p", 0, 0)


def test_a_one_entry_index_of_an_empty_shard(tmp_path):
    path = _shard(tmp_path, [], "empty.tfrecord")
    tfrecord.write_index(path + tfrecord.INDEX_SUFFIX, np.zeros(1, np.uint64))
    got = tfrecord.load_offsets(path)
    np.testing.assert_array_equal(got, [0])
    assert got.dtype == np.uint64
    assert os.path.getsize(path + tfrecord.INDEX_SUFFIX) == 8
