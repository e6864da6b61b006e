"""Thin adapters from the model packages' task functions to the trainer's `Task`.

EarthMapper: `earthmapper_jax.models.earthmapper` (init_params, load_frozen, loss_fn,
flops_per_example). Tokenizer: `earthmapper_jax.tokenizer.losses` (init_params, loss_fn and
optionally eval_fn). Data: the Grain image pipeline (`earthmapper_jax.data.pipeline`) or, when
`config.data.tokens_dir` is set, the pre-tokenised shards (`earthmapper_jax.data.tokens`).
Only key renaming and plumbing lives here; the maths is in the model packages.
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from earthmapper_jax.errors import EarthMapperError
from earthmapper_jax.train.tasks import Task

# ----------------------------------------------------------------------------- data


def _image_split(config, split):
    """`split` if the dataset has it, else the training split (a dataset without 'val')."""
    from earthmapper_jax.data.writer import read_manifest

    if read_manifest(config.data.dir, split) is None and split != config.data.split:
        return config.data.split
    return split


def _need_data_dir(config):
    if not config.data.get("dir", None) and not config.data.get("tokens_dir", None):
        raise EarthMapperError("set config.data.dir (TFRecord dataset from `earthmapper prepare`) "
                               "or config.data.tokens_dir (from `earthmapper prepare tokens`)")


def image_train_data(config, *, seed, batch_size):
    from earthmapper_jax.data import pipeline

    _need_data_dir(config)
    return pipeline(config.data.dir, config.data.split, batch_size, seed=seed,
                    image_size=config.data.image_size, augment=config.data.augment,
                    num_epochs=None, drop_remainder=True,
                    worker_count=config.data.get("worker_count", 0))


def image_eval_data(config, *, batch_size):
    from earthmapper_jax.data import pipeline

    _need_data_dir(config)
    return pipeline(config.data.dir, _image_split(config, config.data.eval_split), batch_size,
                    seed=config.seed, image_size=config.data.image_size, augment=False,
                    num_epochs=1, shuffle=False, drop_remainder=True)


def image_examples_per_epoch(config):
    from earthmapper_jax.data.writer import read_manifest

    manifest = read_manifest(config.data.dir, config.data.split) if config.data.get("dir") else None
    return manifest["num_records"] if manifest else None


# ----------------------------------------------------------------------------- EarthMapper


def _em_batch(batch):
    """Pipeline keys -> the keys `models.earthmapper.loss_fn` reads."""
    out = {"coords": batch["coords"]}
    if "sat_tokens" in batch:
        out["sat_tokens"], out["map_tokens"] = batch["sat_tokens"], batch["map_tokens"]
    else:
        out["sat_image"], out["map_image"] = batch["satellite"], batch["map"]
    for key in ("sat_sem", "map_sem"):
        if key in batch:
            out[key] = batch[key]
    return out


def _eval_model_config(config):
    """Config for evaluation: no condition dropout, no drop-path (a deterministic loss)."""
    c = ml_collections.ConfigDict(config.to_dict())
    for key in ("coord_drop_rate", "cond_drop_rate", "drop_path_rate"):
        if key in c.model:
            c.model[key] = 0.0
    return c


def _model_object(params, config, tokenizer):
    from earthmapper_jax.models.loading import Model

    mc = ml_collections.ConfigDict(config.model.to_dict())
    mc.mode = "earthmapper"
    return Model(mc, params, tokenizer)


_TOKENIZERS = {}


def _tokenizer(directory):
    from earthmapper_jax import tokenizer as tokenizer_lib

    directory = str(directory)
    if directory not in _TOKENIZERS:
        _TOKENIZERS[directory] = tokenizer_lib.load(directory)
    return _TOKENIZERS[directory]


def _to_uint8(x):
    return ((np.asarray(x, np.float32) + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)


def write_grid(path, rows, gap=2, min_tile=64):
    """rows: list of lists of (H, W, 3) images in [-1, 1] -> one PNG (atomic write).
    Tiles smaller than `min_tile` pixels are enlarged (nearest) so CPU-sized runs stay visible."""
    from PIL import Image

    h, w = np.asarray(rows[0][0]).shape[:2]
    zoom = max(1, min_tile // max(h, 1))
    if zoom > 1:
        rows = [[np.repeat(np.repeat(np.asarray(im), zoom, 0), zoom, 1) for im in r] for r in rows]
        h, w = h * zoom, w * zoom
    ncol = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + gap) - gap, ncol * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = _to_uint8(img)
    if "://" in str(path):  # object store: one upload, atomic by itself
        import io

        from etils import epath

        buf = io.BytesIO()
        Image.fromarray(canvas).save(buf, format="PNG")
        epath.Path(path).write_bytes(buf.getvalue())
        return
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(canvas).save(tmp)
    os.replace(tmp, path)


def em_sample_fn(params, batch, rng, config, path, frozen=None):
    """PNG grid: per example [satellite | generated map | real map | map | generated satellite |
    real satellite]; with pre-tokenised data the "real" images are tokenizer reconstructions."""
    from earthmapper_jax.models import earthmapper as em
    from earthmapper_jax.sampling import translate

    if jax.process_count() > 1:
        return None  # sampling a sharded model from one host's batch: not on pods
    tok = _tokenizer(config.model.tokenizer_dir)
    if "satellite" in batch:
        sat, mp = np.asarray(batch["satellite"]), np.asarray(batch["map"])
    else:
        pn = tuple(config.model.patch_nums)
        sat = np.asarray(tok.decode(em.split_tokens(jnp.asarray(batch["sat_tokens"]), pn)))
        mp = np.asarray(tok.decode(em.split_tokens(jnp.asarray(batch["map_tokens"]), pn)))
    model = _model_object(jax.device_get(params), config, tok)
    coords = np.asarray(batch["coords"], np.float32)
    opts = dict(config.get("sample_options", {}) or {})
    r1, r2 = jax.random.split(rng)
    _, gen_map = translate(model, sat, "sat2map", r1, coords=coords, **opts)
    _, gen_sat = translate(model, mp, "map2sat", r2, coords=coords, **opts)
    gen_map, gen_sat = np.asarray(gen_map), np.asarray(gen_sat)
    if jax.process_index() == 0:
        write_grid(path, [[sat[i], gen_map[i], mp[i], mp[i], gen_sat[i], sat[i]]
                          for i in range(len(sat))])
    err = lambda a, b: float(np.mean(np.abs(a - b)))  # noqa: E731 - rough progress signal
    return {"l1_sat2map": err(gen_map, mp), "l1_map2sat": err(gen_sat, sat)}


def em_export(params, config, workdir):
    """workdir/model: a directory `earthmapper_jax.load` opens (tokenizer by reference)."""
    from earthmapper_jax.io.checkpoint import save_params

    mc = config.model.to_dict()
    mc["mode"] = "earthmapper"
    tok_dir = str(pathlib.Path(config.model.tokenizer_dir).absolute())
    return save_params(pathlib.Path(workdir) / "model", params, mc, kind="earthmapper",
                       meta={"tokenizer": tok_dir}, overwrite=True)


def earthmapper_task() -> Task:
    from earthmapper_jax.models import earthmapper as em

    def loss_fn(params, batch, rng, config, frozen):
        return em.loss_fn(params, _em_batch(batch), rng, config, frozen)

    def eval_fn(params, batch, rng, config, frozen):
        _, m = em.loss_fn(params, _em_batch(batch), rng, _eval_model_config(config), frozen)
        keep = ("loss", "ce", "ce_sat", "ce_map", "acc_sat", "acc_map", "si_loss")
        return {k: v for k, v in m.items() if k in keep}

    def train_data(config, *, seed, batch_size):
        if config.data.get("tokens_dir", None):
            from earthmapper_jax.data import tokens

            return tokens.token_pipeline(config.data.tokens_dir, config.data.split, batch_size,
                                         seed=seed, augment=config.data.augment, num_epochs=None)
        return image_train_data(config, seed=seed, batch_size=batch_size)

    def eval_data(config, *, batch_size):
        if config.data.get("tokens_dir", None):
            from earthmapper_jax.data import tokens

            split = tokens.existing_split(config.data.tokens_dir, config.data.eval_split,
                                          config.data.split)
            return tokens.token_pipeline(config.data.tokens_dir, split, batch_size,
                                         seed=config.seed, augment=False, num_epochs=1,
                                         shuffle=False)
        return image_eval_data(config, batch_size=batch_size)

    def examples_per_epoch(config):
        if config.data.get("tokens_dir", None):
            from earthmapper_jax.data import tokens

            return tokens.read_manifest(config.data.tokens_dir, config.data.split)["num_records"]
        return image_examples_per_epoch(config)

    return Task(name="earthmapper", init_params=functools.partial(em.init_params, boxed=True),
                loss_fn=loss_fn,
                train_data=train_data, load_frozen=em.load_frozen, eval_data=eval_data,
                eval_fn=eval_fn, sample_fn=em_sample_fn, export=em_export,
                examples_per_epoch=examples_per_epoch, flops_per_example=em.flops_per_example)


# ----------------------------------------------------------------------------- tokenizer


def _codebook_cfg(config):
    cb = config.get("codebook", None) or {}
    return int(cb.get("restart_max_age", 0)), max(1, int(cb.get("restart_every", 100)))


def tokenizer_task() -> Task:
    """The VQ-VAE training task of `earthmapper_jax.tokenizer.losses` on image batches.

    Each batch trains on its satellite and map tiles together (one tokenizer serves both).
    Dead-code restarts (config.codebook.restart_max_age > 0) need the loss metrics to carry
    per-code hit counts under "hits" (K, V); without them the restart hook stays idle.
    """
    try:
        from earthmapper_jax.tokenizer import losses as tl
    except ModuleNotFoundError as e:
        raise EarthMapperError("tokenizer training needs earthmapper_jax.tokenizer.losses, "
                               "which this installation lacks") from e
    from earthmapper_jax.tokenizer import Tokenizer, model_config
    from earthmapper_jax.tokenizer.model import VQVAE

    def _images(batch):
        return {"image": jnp.concatenate([batch["satellite"], batch["map"]], axis=0)}

    def loss_fn(params, batch, rng, config, frozen):
        return tl.loss_fn(params, _images(batch), rng, config)

    eval_fn = None
    if hasattr(tl, "eval_fn"):
        def eval_fn(params, batch, rng, config, frozen):
            return tl.eval_fn(params, _images(batch), rng, config)

    def init_extra(config):
        max_age, _ = _codebook_cfg(config)
        if not max_age:
            return {}
        return {"code_age": jnp.zeros((int(model_config(config.model)["vocab_size"]),),
                                      jnp.int32)}

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
        return params, {"code_age": age}, {"codes_restarted": n,
                                           "dead_codes": jnp.sum(age >= max_age)}

    def sample_fn(params, batch, rng, config, path, frozen=None):
        """PNG grid of [image | reconstruction] rows, satellite and map; returns their PSNR."""
        tok = Tokenizer(tl.tokenizer_params(jax.device_get(params)),
                        model_config(config.model.to_dict()))
        out, rows = {}, []
        for key in ("satellite", "map"):
            x = np.asarray(batch[key], np.float32)
            rec = np.clip(np.asarray(tok.decode(tok.encode(x))), -1, 1)
            mse = np.mean(((x - rec) / 2.0) ** 2)  # on the [0, 1] scale
            out[f"psnr_{key}"] = float(10 * np.log10(1.0 / max(mse, 1e-12)))
            rows += [[x[i], rec[i]] for i in range(len(x))]
        if jax.process_index() == 0:
            write_grid(path, rows)
        return out

    def export(params, config, workdir):
        tok = Tokenizer(tl.tokenizer_params(params), model_config(config.model.to_dict()))
        return tok.save(pathlib.Path(workdir) / "tokenizer", overwrite=True)

    return Task(name="tokenizer", init_params=tl.init_params, loss_fn=loss_fn,
                train_data=image_train_data, eval_data=image_eval_data, eval_fn=eval_fn,
                sample_fn=sample_fn, export=export, init_extra=init_extra,
                update_extra=update_extra, examples_per_epoch=image_examples_per_epoch,
                flops_per_example=getattr(tl, "flops_per_example", None))
