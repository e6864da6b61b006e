"""On-disk format: TFRecord framing (CRC-32C), Example schema, sharded atomic writer, manifest,
corrupt-record errors, `earthmapper inspect`."""

import json
import math
import os

import crc32c
import numpy as np
import pytest

from earthmapper_jax.cli import main as cli_main
from earthmapper_jax.cli.inspect_cmd import inspect_dir
from earthmapper_jax.data import example, tfrecord
from earthmapper_jax.data.source import SKIPPED, TFRecordSource
from earthmapper_jax.data.writer import ShardedWriter, read_manifest, split_shards
from earthmapper_jax.errors import DataError


def test_masked_crc_matches_tensorflow_definition():
    # CRC-32C check value of "123456789" is 0xE3069283; TF masks it by rotate-15 + 0xA282EAD8.
    assert crc32c.crc32c(b"123456789") == 0xE3069283
    crc = 0xE3069283
    assert tfrecord.masked_crc(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    framed = tfrecord.frame(b"abc")
    assert framed[:8] == (3).to_bytes(8, "little") and framed[12:15] == b"abc" and len(framed) == 19


def _records(n):
    return [os.urandom(int(s)) for s in np.random.default_rng(0).integers(1, 300, n)]


def test_writer_shards_index_manifest_roundtrip(tmp_path):
    recs = _records(40)
    with ShardedWriter(tmp_path, "train", shard_bytes=2000, converter="t", args={"a": 1}) as w:
        for r in recs:
            w.write(r)
    m = read_manifest(tmp_path, "train")
    assert m["num_records"] == 40 and m["num_shards"] > 2 and m["converter"] == {"name": "t", "args": {"a": 1}}
    assert sum(s["num_records"] for s in m["shards"]) == 40
    shards = split_shards(tmp_path, "train")
    assert [os.path.basename(p) for p in shards] == [s["file"] for s in m["shards"]]
    got = [d for p in shards for _, d in tfrecord.iter_records(p)]
    assert got == recs
    for p in shards:  # stored index == scanned index
        np.testing.assert_array_equal(tfrecord.load_offsets(p), tfrecord.scan_offsets(p))
    src = TFRecordSource(shards)
    assert len(src) == 40 and all(src[i].data == recs[i] for i in (0, 17, 39))
    assert not [f for f in os.listdir(tmp_path) if "tmp" in f]
    # Written through temporary files, yet with the mode a plain open() gives (others read datasets).
    umask = os.umask(0o022)
    os.umask(umask)
    for name in os.listdir(tmp_path):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name


def test_writer_is_atomic_and_refuses_to_clobber(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardedWriter(tmp_path, "train") as w:
            w.write(b"x")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []  # nothing half-written
    with ShardedWriter(tmp_path, "train") as w:
        w.write(b"x")
    with pytest.raises(DataError, match="already exists"):
        ShardedWriter(tmp_path, "train")
    with ShardedWriter(tmp_path, "train", overwrite=True) as w:
        w.write(b"y")
        w.write(b"z")
    assert read_manifest(tmp_path, "train")["num_records"] == 2


def test_example_roundtrip_keeps_bytes_and_metadata():
    img = np.random.default_rng(1).integers(0, 255, (8, 8, 3), np.uint8)
    png, jpg = example.encode_image(img, "png"), example.encode_image(img, "jpeg")
    rec = example.PairRecord(satellite=jpg, map=png, satellite_format="jpeg", map_format="png", tile_id="beijing/1",
                             latitude=39.9, longitude=116.4, city="beijing", source="cnsatmap", height=8, width=8,
                             original_height=16, original_width=16)
    back = example.parse(example.encode(rec))
    assert back.satellite == jpg and back.map == png and back.tile_id == "beijing/1"
    assert (back.city, back.source, back.original_height, back.width) == ("beijing", "cnsatmap", 16, 8)
    assert abs(back.latitude - 39.9) < 1e-5 and abs(back.longitude - 116.4) < 1e-4
    np.testing.assert_array_equal(example.decode_image(back.map), img)
    nan = example.parse(example.encode(example.PairRecord(satellite=png, map=png, tile_id="x")))
    assert math.isnan(nan.latitude) and math.isnan(nan.longitude)
    with pytest.raises(DataError, match="rec 3"):
        example.parse(b"\x00garbage", "rec 3")


def _corrupt(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_corrupt_record_named_by_shard_and_index(tmp_path, capsys):
    recs = _records(10)
    with ShardedWriter(tmp_path, "train") as w:
        for r in recs:
            w.write(r)
    (shard,) = split_shards(tmp_path, "train")
    offsets = tfrecord.load_offsets(shard)
    _corrupt(shard, int(offsets[6]) + 12 + 1)  # a data byte of record 6
    name = os.path.basename(shard)
    with pytest.raises(DataError, match=rf"{name}: record 6 .*data CRC mismatch"):
        list(tfrecord.iter_records(shard))
    src = TFRecordSource([shard])
    assert src[5].data == recs[5]
    with pytest.raises(DataError, match=rf"{name}: record 6"):
        src[6]
    before = SKIPPED["corrupt_record"]
    assert TFRecordSource([shard], on_error="skip")[6] is None
    assert SKIPPED["corrupt_record"] == before + 1
    with pytest.raises(DataError, match="record 6"):
        inspect_dir(tmp_path, progress=False)
    assert cli_main(["inspect", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "record 6" in err and len(err.strip().splitlines()) == 1


def test_truncated_shard_is_reported(tmp_path):
    with ShardedWriter(tmp_path, "train") as w:
        for r in _records(3):
            w.write(r)
    (shard,) = split_shards(tmp_path, "train")
    os.truncate(shard, os.path.getsize(shard) - 3)
    os.remove(shard + tfrecord.INDEX_SUFFIX)
    with pytest.raises(DataError, match="record 2 .*truncated"):
        tfrecord.scan_offsets(shard)


def test_inspect_counts_and_checksums(tmp_path, capsys):
    with ShardedWriter(tmp_path, "val") as w:
        w.write(b"a")
    assert inspect_dir(tmp_path, checksums=True, progress=False)["val"]["records"] == 1
    assert cli_main(["inspect", str(tmp_path), "--checksums", "--quiet"]) == 0
    assert "val: 1 records" in capsys.readouterr().out
    m = json.load(open(tmp_path / "val.manifest.json"))
    m["shards"][0]["sha256"] = "0" * 64
    json.dump(m, open(tmp_path / "val.manifest.json", "w"))
    with pytest.raises(DataError, match="sha256"):
        inspect_dir(tmp_path, checksums=True, progress=False)
