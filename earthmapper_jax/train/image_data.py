"""The image-pair data both training tasks read: `earthmapper prepare` datasets (config.data.dir).

    train_data(config, *, seed, batch_size) -> checkpointable iterator of host batches
        {"sat_image", "map_image" (B, S, S, 3) float in [-1, 1], "coords" (B, 2), ...}
    eval_data(config, *, batch_size) -> one pass over config.data.eval_split (the training
        split when the dataset has no such split), unshuffled, unaugmented
    eval_split(config) -> the split eval_data reads
    examples_per_epoch(config) -> int or None (the training split's manifest)
"""

from __future__ import annotations

from earthmapper_jax.data import pipeline
from earthmapper_jax.data.writer import read_manifest
from earthmapper_jax.errors import InputError


def need_data_dir(config) -> None:
    if not config.data.get("dir", None) and not config.data.get("tokens_dir", None):
        raise InputError("set config.data.dir (TFRecord dataset from `earthmapper prepare`) "
                         "or config.data.tokens_dir (from `earthmapper prepare tokens`)")


def train_data(config, *, seed, batch_size):
    need_data_dir(config)
    return pipeline(config.data.dir, config.data.split, batch_size, seed=seed,
                    image_size=config.data.image_size, augment=config.data.augment,
                    num_epochs=None, drop_remainder=True,
                    worker_count=config.data.get("worker_count", 0))


def eval_split(config) -> str:
    """config.data.eval_split, or the training split for a dataset without it."""
    need_data_dir(config)
    split = config.data.eval_split
    if read_manifest(config.data.dir, split) is None and split != config.data.split:
        split = config.data.split
    return split


def eval_data(config, *, batch_size):
    return pipeline(config.data.dir, eval_split(config), batch_size, seed=config.seed,
                    image_size=config.data.image_size, augment=False, num_epochs=1,
                    shuffle=False, drop_remainder=True)


def examples_per_epoch(config):
    manifest = read_manifest(config.data.dir, config.data.split) if config.data.get("dir") else None
    return manifest["num_records"] if manifest else None
