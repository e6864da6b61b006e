"""Data on disk (TFRecord shards of tf.train.Example, written without TensorFlow) and the Grain
input pipeline. `pipeline(data_dir, split, batch_size, ...)` is the entry point; see
docs/data.md for layouts and commands."""

from earthmapper_jax.data.augment import Augment
from earthmapper_jax.data.pipeline import dataset, pipeline, to_global_array

__all__ = ["Augment", "dataset", "pipeline", "to_global_array"]
