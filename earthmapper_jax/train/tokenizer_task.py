"""Training the multi-scale VQ-VAE (task "tokenizer"): loss, data, eval, sample grid, export.

The maths lives in `earthmapper_jax.tokenizer.losses`; this file says how the trainer runs it.
Each batch trains on its satellite and map tiles together (one tokenizer serves both).
Dead-code restarts (config.codebook.restart_max_age > 0): a code unused for that many steps
takes a random encoder output, checked every config.codebook.restart_every steps; the loss
metrics carry the per-code hit counts under "hits" (K, V).

    make_task() -> Task          (train/trainer.REGISTRY["tokenizer"])
    sample grid: rows of [tile | reconstruction], satellite then map, with their PSNR
    export: WORKDIR/tokenizer, a directory `earthmapper_jax.tokenizer.load` opens
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.io.images import write_grid
from earthmapper_jax.tokenizer import Tokenizer, model_config
from earthmapper_jax.tokenizer import losses as tl
from earthmapper_jax.tokenizer.model import VQVAE
from earthmapper_jax.train import image_data
from earthmapper_jax.train.tasks import Task

# batch key -> name in the sample metrics (psnr_<name>)
MODALITY_KEYS = (("sat_image", "satellite"), ("map_image", "map"))


def _images(batch):
    return {"image": jnp.concatenate([batch["sat_image"], batch["map_image"]], axis=0)}


def _codebook_cfg(config):
    cb = config.get("codebook", None) or {}
    return int(cb.get("restart_max_age", 0)), max(1, int(cb.get("restart_every", 100)))


def loss_fn(params, batch, rng, config, frozen=None):
    return tl.loss_fn(params, _images(batch), rng, config)


def eval_fn(params, batch, rng, config, frozen=None):
    return tl.eval_fn(params, _images(batch), rng, config)


def init_extra(config):
    max_age, _ = _codebook_cfg(config)
    if not max_age:
        return {}
    return {"code_age": jnp.zeros((int(model_config(config.model)["vocab_size"]),), jnp.int32)}


def update_extra(params, extra, batch, aux, rng, config, step):
    max_age, every = _codebook_cfg(config)
    if not extra or "hits" not in aux:
        return params, extra, {}
    age = tl.update_code_age(extra["code_age"], aux["hits"])

    def restart(args):
        p, a = args
        vae = VQVAE(model_config(config.model))
        feats = vae.apply({"params": tl.tokenizer_params(p)}, _images(batch)["image"],
                          method=VQVAE.encode_features)
        p, a, n = tl.restart_dead_codes(p, a, feats, rng, max_age=max_age)
        return p, a, n.astype(jnp.int32)

    def keep(args):
        return args[0], args[1], jnp.zeros((), jnp.int32)

    params, age, n = jax.lax.cond((step + 1) % every == 0, restart, keep, (params, age))
    return params, {"code_age": age}, {"codes_restarted": n, "dead_codes": jnp.sum(age >= max_age)}


def sample_fn(params, batch, rng, config, path, frozen=None):
    """PNG grid of [image | reconstruction] rows, satellite and map; returns their PSNR."""
    tok = Tokenizer(tl.tokenizer_params(jax.device_get(params)), model_config(config.model.to_dict()))
    out, rows = {}, []
    for key, name in MODALITY_KEYS:
        x = np.asarray(batch[key], np.float32)
        rec = np.clip(np.asarray(tok.decode(tok.encode(x))), -1, 1)
        mse = np.mean(((x - rec) / 2.0) ** 2)  # on the [0, 1] scale
        out[f"psnr_{name}"] = float(10 * np.log10(1.0 / max(mse, 1e-12)))
        rows += [[x[i], rec[i]] for i in range(len(x))]
    if jax.process_index() == 0:
        write_grid(path, rows)
    return out


def export(params, config, workdir):
    tok = Tokenizer(tl.tokenizer_params(params), model_config(config.model.to_dict()))
    return tok.save(pathlib.Path(workdir) / "tokenizer", overwrite=True)


def make_task() -> Task:
    return Task(name="tokenizer", init_params=tl.init_params, loss_fn=loss_fn,
                train_data=image_data.train_data, eval_data=image_data.eval_data,
                eval_split=image_data.eval_split,
                eval_fn=eval_fn, sample_fn=sample_fn, export=export, init_extra=init_extra,
                update_extra=update_extra, examples_per_epoch=image_data.examples_per_epoch)
