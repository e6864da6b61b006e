"""The Grain input pipeline: TFRecord shards -> batches of paired, normalised tiles.

    shards --offset index--> random-access source --exact global shuffle (per epoch)--> repeat
      --> CRC-checked parse + decode --> paired augmentation (seeded per element) --> resize /
      normalise to [-1, 1] --> this host's slice (i::process_count) --> batch
      --> optional multiprocess prefetch

Everything up to the host slice is indexed by the element's global position in the epoch
stream, so the order and the augmentation of an element do not depend on the number of hosts,
the hosts partition each epoch exactly, and the iterator state (`get_state`/`set_state`, or
`grain.checkpoint.CheckpointSave` inside an Orbax checkpoint) resumes at the same element.
"""

from __future__ import annotations

import os

import grain
import jax
from absl import flags

from earthmapper_jax.data.augment import DecodePair, Finalise, PairedAugment, resolve_augment
from earthmapper_jax.data.source import TFRecordSource
from earthmapper_jax.data.writer import split_shards
from earthmapper_jax.errors import DataError

_SEED_MOD = 2**32


def _host(process_index, process_count):
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return int(process_index), int(process_count)


def dataset(data_dir, split: str, *, seed: int = 0, image_size: int | None = None, augment=False,
            num_epochs: int | None = None, shuffle: bool = True, process_index: int | None = None,
            process_count: int | None = None, on_error: str = "raise",
            verify_crc: bool = True) -> grain.MapDataset:
    """This host's element stream (unbatched MapDataset of dicts); see `pipeline`."""
    if not os.path.isdir(str(data_dir)):
        raise DataError(f"data directory {data_dir} does not exist")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    pi, pc = _host(process_index, process_count)
    source = TFRecordSource(split_shards(data_dir, split), verify=verify_crc, on_error=on_error)
    if len(source) == 0:
        raise DataError(f"split '{split}' in {data_dir} has no records")
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=seed % _SEED_MOD)  # reshuffled every epoch by `repeat`
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    ds = ds.map(DecodePair(on_error))
    aug = resolve_augment(augment)
    if aug is None:
        ds = ds.map(Finalise(image_size))
    else:
        ds = ds.random_map(PairedAugment(aug, image_size), seed=(seed * 1_000_003 + 17) % _SEED_MOD)
    return ds[pi::pc]


def pipeline(data_dir, split: str, batch_size: int, *, seed: int = 0, image_size: int | None = None,
             augment=False, num_epochs: int | None = None, shuffle: bool = True,
             drop_remainder: bool = False, process_index: int | None = None,
             process_count: int | None = None, worker_count: int = 0, worker_buffer_size: int = 2,
             read_threads: int = 4, on_error: str = "raise", verify_crc: bool = True):
    """Iterator over numpy batches of this host's share of a split.

    Each batch: ``sat_image``, ``map_image`` float32 (B, H, W, 3) in [-1, 1], ``coords`` float32
    (B, 2) as (lat, lon) with NaN where unknown, ``tile_id`` (B,) str. `batch_size` is per host.

    seed: shuffle order and augmentation (same seed, same stream). image_size: resize to this
    square size (None: keep the stored size). augment: False, True (default paired crop/flip/
    rot90) or an `Augment`. num_epochs: None repeats forever (reshuffling each epoch).
    process_index/process_count: default to JAX's. worker_count > 0: decode in that many
    processes (the output is deterministic for a given worker_count). on_error: "raise" (a
    corrupt or undecodable record raises DataError naming shard and record) or "skip" (logged
    and counted in `earthmapper_jax.data.source.SKIPPED`).

    The iterator has ``get_state()``/``set_state()`` and works with Orbax through
    ``grain.checkpoint.CheckpointSave``/``CheckpointRestore``. Close it (``it.close()``) when
    worker_count > 0.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = dataset(data_dir, split, seed=seed, image_size=image_size, augment=augment,
                 num_epochs=num_epochs, shuffle=shuffle, process_index=process_index,
                 process_count=process_count, on_error=on_error, verify_crc=verify_crc)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * batch_size))
    it_ds = it_ds.batch(batch_size, drop_remainder=drop_remainder)
    if worker_count > 0:
        _absl_flags_defaults()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=worker_count, per_worker_buffer_size=worker_buffer_size))
    return iter(it_ds)


def _absl_flags_defaults():
    # Grain's worker processes read absl flags; outside an absl app nobody parses them, so
    # take their defaults (an absl app that parsed its flags keeps its values).
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()

