"""Data on disk (TFRecord shards of tf.train.Example, written without TensorFlow) and the Grain
input pipeline. `pipeline(data_dir, split, batch_size, ...)` is the entry point; see
docs/data.md for layouts and commands. Nothing here imports the tokenizer or the models:
pre-tokenising a dataset lives above this layer (earthmapper_jax/pretokenize.py)."""

from earthmapper_jax.data.augment import Augment
from earthmapper_jax.data.pipeline import dataset, pipeline

__all__ = ["Augment", "dataset", "pipeline"]
