"""Data on disk (TFRecord shards of tf.train.Example, written without TensorFlow) and the Grain
input pipeline. `pipeline(data_dir, split, batch_size, ...)` is the entry point; see
docs/data.md for layouts and commands. This layer sits below the networks and never imports
them: pre-tokenising a dataset lives above it (earthmapper_jax/pretokenize.py)."""

from earthmapper_jax.data.augment import Augment
from earthmapper_jax.data.pipeline import dataset, pipeline

__all__ = ["Augment", "dataset", "pipeline"]
