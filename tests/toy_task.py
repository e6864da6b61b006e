"""A small conv + MLP classifier on procedurally generated images: the trainer's own test model.

It exercises everything a real task does (logically partitioned params, a positional table and
biases for the no-decay list, dropout RNG, a checkpointable Grain pipeline, eval and sample
hooks) at a size that trains in seconds on CPU. Tests pass `TASK` to
`trainer.train_and_evaluate(config, workdir, task=TASK)`; tests/toy_config.py adds it to the
trainer's registry as "toy" for runs through the command line.
"""

from __future__ import annotations

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.io.images import write_grid
from earthmapper_jax.train.tasks import Task


def _dense(features, names, dtype, name):
    return nn.Dense(features, dtype=dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[-1:]))


class ToyNet(nn.Module):
    width: int = 64
    hidden: int = 128
    num_classes: int = 16
    dropout: float = 0.1
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x, *, train: bool):
        dt = jnp.dtype(self.dtype)
        x = nn.Conv(self.width, (3, 3), strides=(2, 2), dtype=dt, name="conv",
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.lecun_normal(), ("conv_h", "conv_w", "conv_in", "conv_out")),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))(x)
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        pos = self.param("pos_embed", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("length", "embed")), (h * w, c))
        x = nn.gelu(x + pos.astype(dt)).mean(axis=1)
        x = nn.with_logical_constraint(x, ("act_batch", "act_emb"))
        y = _dense(self.hidden, ("embed", "mlp"), dt, "fc1")(x)
        y = nn.Dropout(self.dropout, deterministic=not train)(nn.gelu(y))
        x = x + _dense(self.width, ("mlp", "embed"), dt, "fc2")(y)
        x = nn.LayerNorm(dtype=dt, name="norm")(x)
        logits = _dense(self.num_classes, ("embed", "vocab"), dt, "head")(x)
        return logits.astype(jnp.float32)  # fp32 logits/loss whatever the compute dtype


def _model(config):
    m = config.model
    return ToyNet(width=m.width, hidden=m.hidden, num_classes=m.num_classes,
                  dropout=m.get("dropout", 0.1), dtype=m.get("dtype", "float32"))


def init_params(config, rng):
    size = config.data.image_size
    x = jnp.zeros((1, size, size, 3), jnp.float32)
    return _model(config).init({"params": rng}, x, train=False)["params"]


def loss_fn(params, batch, rng, config, frozen=None):
    logits = _model(config).apply({"params": params}, batch["image"], train=True,
                                  rngs={"dropout": rng})
    ce = _ce(logits, batch["label"])
    acc = (logits.argmax(-1) == batch["label"]).mean()
    return ce.mean(), {"accuracy": acc}


def _ce(logits, labels):
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def eval_fn(params, batch, rng, config, frozen=None):
    del rng, frozen
    logits = _model(config).apply({"params": params}, batch["image"], train=False)
    return {"loss": _ce(logits, batch["label"]).mean(),
            "accuracy": (logits.argmax(-1) == batch["label"]).mean()}


def _templates(config):
    rng = np.random.default_rng(1234)
    s = config.data.image_size
    return rng.uniform(-1, 1, (config.model.num_classes, s, s, 3)).astype(np.float32)


class _MakeExample(grain.transforms.Map):
    def __init__(self, config, seed):
        self.templates = _templates(config)
        self.seed = seed

    def map(self, i):
        rng = np.random.default_rng([self.seed, int(i)])
        label = int(rng.integers(len(self.templates)))
        noise = rng.normal(0, 0.7, self.templates.shape[1:]).astype(np.float32)
        return {"image": np.clip(self.templates[label] + noise, -1, 1), "label": np.int32(label)}


def _dataset(config, *, seed, batch_size, n, shuffle, epochs):
    ds = grain.MapDataset.range(n)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(epochs)
    ds = ds[jax.process_index()::jax.process_count()]
    ds = ds.map(_MakeExample(config, seed if shuffle else seed + 1))
    return ds.batch(batch_size, drop_remainder=True)


class _PoisonBatch(grain.transforms.MapWithIndex):
    """Test hook: NaN images in the batch consumed at (1-based) step `step`."""

    def __init__(self, step):
        self.step = step

    def map_with_index(self, index, batch):
        if index + 1 == self.step:
            batch = dict(batch, image=np.full_like(batch["image"], np.nan))
        return batch


def train_data(config, *, seed, batch_size):
    n = config.data.get("examples_per_epoch", None) or 512
    ds = _dataset(config, seed=seed, batch_size=batch_size, n=n, shuffle=True, epochs=None)
    if config.get("toy_nan_at_step", None) is not None:
        ds = ds.map_with_index(_PoisonBatch(config.toy_nan_at_step))
    return iter(ds.to_iter_dataset())


def eval_data(config, *, batch_size):
    n = config.get("toy_eval_examples", None) or batch_size * config.get("eval_batches", 2)
    return _dataset(config, seed=config.seed + 7, batch_size=batch_size, n=n, shuffle=False,
                    epochs=1).to_iter_dataset()


def sample_fn(params, batch, rng, config, path, frozen=None):
    """Writes the inputs as a PNG strip (process 0); returns the accuracy on them."""
    logits = jax.jit(lambda p, x: _model(config).apply({"params": p}, x, train=False))(
        params, jnp.asarray(batch["image"]))
    pred = np.asarray(jax.device_get(logits)).argmax(-1)
    if jax.process_index() == 0:
        write_grid(path, [list(np.asarray(batch["image"]))])
    return {"sample_accuracy": float((pred == np.asarray(batch["label"])).mean())}


def examples_per_epoch(config):
    return config.data.get("examples_per_epoch", None) or 512


TASK = Task(name="toy", init_params=init_params, loss_fn=loss_fn, train_data=train_data,
            eval_data=eval_data, eval_fn=eval_fn, sample_fn=sample_fn,
            examples_per_epoch=examples_per_epoch)


def make_task() -> Task:
    return TASK
