"""Toy classifier (the trainer's own test model, tests/toy_task.py): checks the training system
in seconds on CPU. The toy is not a production task: loading this config adds it to the
trainer's registry as "toy" (so the command line can run it); tests pass the task directly.

Run from the repository root (the toy task lives in tests/):
    python -m earthmapper_jax.main --config tests/toy_config.py --workdir /tmp/toy
    python -m earthmapper_jax.main --config tests/toy_config.py --workdir /tmp/toy \
        --config.mesh.fsdp=2 --config.total_steps=50
"""

import ml_collections

from earthmapper_jax.train import trainer
from earthmapper_jax.train.defaults import add_training_fields
from tests import toy_task

trainer.REGISTRY.setdefault("toy", toy_task.make_task)


def get_config(arg=None):
    del arg
    config = ml_collections.ConfigDict()
    config.task = "toy"
    config.model = ml_collections.ConfigDict(
        dict(width=64, hidden=128, num_classes=16, dropout=0.1, dtype="float32"))
    config.toy_nan_at_step = ml_collections.config_dict.placeholder(int)  # test hook
    # Test hook: the eval split's size (default batch_size * eval_batches, which always divides).
    config.toy_eval_examples = ml_collections.config_dict.placeholder(int)
    add_training_fields(config)
    config.batch_size = 16
    config.total_steps = 40
    config.data.image_size = 8
    config.data.examples_per_epoch = 512
    config.optim.base_lr = 0.05
    config.optim.warmup_steps = 5
    config.checkpoint.every_steps = 10
    config.log_every_steps = 1
    config.eval_every_steps = 20
    config.eval_batches = 2
    return config
