"""Grain pipeline: batches, determinism, resume exactness, exact per-host partition, paired
augmentation, corrupt-record policy, Orbax checkpoint of the iterator, global arrays (through
the trainer's train/sharding.host_batch_to_global)."""

import os
import shutil

import jax
import numpy as np
import pytest

from earthmapper_jax.data import Augment, example, pipeline, tfrecord
from earthmapper_jax.data.writer import ShardedWriter, split_shards
from earthmapper_jax.data_prep import synthetic as syn_prep
from earthmapper_jax.errors import DataError
from earthmapper_jax.train.sharding import host_batch_to_global, make_mesh

N = 30


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    # Small shards so that the data spans several files.
    syn_prep.prepare(d, N + 4, size=16, seed=1, val_fraction=4 / (N + 4), shard_bytes=4000, progress=False)
    assert len(split_shards(d, "train")) > 2
    return d


def _pipe(d, bs=4, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return pipeline(d, "train", bs, **kw)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in ("sat_image", "map_image", "coords", "tile_id"))


def test_batch_layout(syn_dir):
    b = next(_pipe(syn_dir, image_size=24, augment=True))
    assert b["sat_image"].shape == b["map_image"].shape == (4, 24, 24, 3)
    assert b["sat_image"].dtype == np.float32 and b["coords"].shape == (4, 2) and b["tile_id"].shape == (4,)
    assert -1 <= b["map_image"].min() and b["map_image"].max() <= 1
    assert np.all((b["coords"][:, 0] > 39) & (b["coords"][:, 0] < 41))


def test_deterministic_for_a_seed(syn_dir):
    a = _take(_pipe(syn_dir, seed=5, augment=True), 3)
    assert _same(a, _take(_pipe(syn_dir, seed=5, augment=True), 3))
    assert not _same(a, _take(_pipe(syn_dir, seed=6, augment=True), 3))


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_continues_with_the_same_elements(syn_dir, workers):
    kw = dict(seed=3, augment=True, worker_count=workers)
    it = _pipe(syn_dir, **kw)
    _take(it, 5)
    state = it.get_state()
    ref = _take(it, 6)  # crosses the epoch boundary (30 records, batch 4)
    it2 = _pipe(syn_dir, **kw)
    it2.set_state(state)
    got = _take(it2, 6)
    if workers:
        it.close()
        it2.close()
    assert _same(ref, got)


def test_orbax_checkpoint_of_the_iterator(syn_dir, tmp_path):
    import grain
    import orbax.checkpoint as ocp

    it = _pipe(syn_dir, seed=2, augment=True)
    _take(it, 2)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data_iter",))
    mngr.save(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    ref = _take(it, 3)
    it2 = _pipe(syn_dir, seed=2, augment=True)
    mngr.restore(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(it2)))
    assert _same(ref, _take(it2, 3))
    mngr.close()


@pytest.mark.parametrize("hosts", [1, 2, 4])
def test_hosts_partition_each_epoch_exactly(syn_dir, hosts):
    everything = [t for b in _pipe(syn_dir, bs=7, num_epochs=1, seed=9) for t in b["tile_id"]]
    assert len(everything) == N and len(set(everything)) == N
    per_host = [[t for b in _pipe(syn_dir, bs=3, num_epochs=1, seed=9, process_index=h, process_count=hosts)
                 for t in b["tile_id"]] for h in range(hosts)]
    flat = [t for ids in per_host for t in ids]
    assert len(flat) == N and set(flat) == set(everything)  # no duplicates, no loss
    for h, ids in enumerate(per_host):  # host h holds global positions h, h + hosts, ...
        assert ids == everything[h::hosts]


def _identical_pair_dir(d, n=6, size=20):
    rng = np.random.default_rng(0)
    with ShardedWriter(d, "train") as w:
        for i in range(n):
            png = example.encode_image(rng.integers(0, 255, (size, size, 3), np.uint8))
            w.write(example.encode(example.PairRecord(satellite=png, map=png, tile_id=str(i), height=size,
                                                      width=size)))
    return d


def test_augmentation_is_paired(tmp_path):
    d = _identical_pair_dir(tmp_path)
    aug = Augment(crop_scale=(0.5, 0.9), hflip=True, vflip=True, rot90=True)
    plain = next(_pipe(d, bs=6, shuffle=False, num_epochs=1))
    for b in _take(_pipe(d, bs=6, augment=aug, image_size=16, seed=4), 3):
        np.testing.assert_array_equal(b["sat_image"], b["map_image"])  # same crop/flip/rotation on both
    b = next(_pipe(d, bs=6, augment=aug, shuffle=False, num_epochs=1))
    assert not np.array_equal(b["sat_image"], plain["sat_image"])
    assert np.isnan(plain["coords"]).all()


def test_corrupt_record_raises_or_is_skipped(syn_dir, tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(syn_dir, d)
    shard = split_shards(d, "train")[1]
    offs = tfrecord.load_offsets(shard)
    with open(shard, "r+b") as f:
        f.seek(int(offs[1]) + 40)
        f.write(b"\x00\x01\x02\x03")
    name = os.path.basename(shard)
    with pytest.raises(DataError, match=rf"{name}: record 1"):
        for _ in _pipe(d, num_epochs=1, read_threads=1):
            pass
    got = [t for b in _pipe(d, num_epochs=1, on_error="skip") for t in b["tile_id"]]
    assert len(got) == N - 1


def test_missing_split_is_a_clear_error(syn_dir):
    with pytest.raises(DataError, match="no split 'test'.*train, val"):
        pipeline(syn_dir, "test", 2, process_index=0, process_count=1)


def test_host_batch_to_global(syn_dir):
    b = next(_pipe(syn_dir, bs=8))
    g = host_batch_to_global(b, make_mesh())
    assert g["sat_image"].shape == (8, 16, 16, 3) and len(g["sat_image"].addressable_shards) == len(jax.devices())
    np.testing.assert_array_equal(np.asarray(g["coords"]), b["coords"])
    assert "tile_id" not in g and isinstance(b["tile_id"], np.ndarray)  # strings stay on the host
