"""Tokenizer training: the loss, evaluation and codebook care, as a task for the generic trainer.

Interface (pure functions; `config` is the training ConfigDict with `config.model` = the
tokenizer fields of `tokenizer.config.DEFAULTS` and `config.loss` = LOSS_DEFAULTS below):

    init_params(config, rng) -> {"vae": tokenizer params, "disc": ... (only if gan_weight > 0)}
    loss_fn(params, batch, rng, config) -> (loss, metrics)      batch["image"]: (B, S, S, 3)
    tokenizer_loss(params, images, rng, config) -> (loss, metrics)
    eval_fn(params, batch, rng, config) -> {"psnr", "mse", "l1"} of the clipped reconstruction
    tokenizer_params(params) -> the "vae" part, for Tokenizer.from_params(..., config.model)
    update_code_age(code_age, hits) / restart_dead_codes(params, code_age, features, rng, ...)

loss = l1 * |x - x_rec| + l2 * (x - x_rec)^2 + vq * L_vq [+ lpips * LPIPS] [+ gan * G_adv]
where L_vq is VAR's multi-scale VQ loss (commitment beta, averaged over scales, straight-through
f_hat). With the GAN on, the discriminator's hinge loss is added to the same scalar with
stop-gradients on both sides (the VAE term sees the discriminator frozen, the discriminator
term sees the reconstruction frozen), so one gradient of one scalar trains both and the
generic single-optimizer trainer needs nothing special. Metrics are fp32 scalars, including
`usage/s{k}` (the fraction of the V codes hit at scale k in this batch), plus "hits": the
(K, V) per-scale code counts that `update_code_age` takes (the trainer logs only scalars).

Compute dtype: `config.model.dtype` ("bfloat16" runs the convolutions in bf16 on fp32 params);
the quantizer and every loss term are fp32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from earthmapper_jax.tokenizer import init_params as _init_vae
from earthmapper_jax.tokenizer import logically_partitioned
from earthmapper_jax.tokenizer.config import model_config
from earthmapper_jax.tokenizer.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from earthmapper_jax.tokenizer.image_metrics import psnr
from earthmapper_jax.tokenizer.lpips import load_lpips, lpips_distance
from earthmapper_jax.tokenizer.model import VQVAE

LOSS_DEFAULTS = dict(
    l1_weight=0.0,
    l2_weight=1.0,  # the paper's |im - im_rec|^2
    vq_weight=1.0,
    lpips_weight=0.0,  # off by default: needs the two official weight files below
    lpips_vgg_path="",
    lpips_lin_path="",
    gan_weight=0.0,  # off by default
    disc_ch=64,
    disc_layers=3,
)


def loss_config(config) -> dict:
    """config.loss with defaults filled in (a plain dict)."""
    out = dict(LOSS_DEFAULTS)
    loss = config.get("loss", None) if hasattr(config, "get") else None
    if loss is not None:
        out.update(loss.to_dict() if hasattr(loss, "to_dict") else dict(loss))
    return out


def _vae(config) -> VQVAE:
    return VQVAE(model_config(config.model))


def _disc(config, lc) -> PatchDiscriminator:
    dt = {"bfloat16": jnp.bfloat16, "float16": jnp.float16}.get(config.model.get("dtype", ""),
                                                                 jnp.float32)
    return PatchDiscriminator(ch=lc["disc_ch"], num_layers=lc["disc_layers"], dtype=dt)


def init_params(config, rng):
    """{"vae": ..., "disc": ...}; "disc" only when config.loss.gan_weight > 0. Leaves are
    `nn.LogicallyPartitioned` boxes (the trainer shards by their names); `nn.meta.unbox` gives
    the plain arrays."""
    lc = loss_config(config)
    k_vae, k_disc = jax.random.split(rng)
    params = {"vae": logically_partitioned(_init_vae(config.model, k_vae), config.model)}
    if lc["gan_weight"] > 0:
        s = model_config(config.model)["image_size"]
        params["disc"] = _disc(config, lc).init(k_disc, jnp.zeros((1, s, s, 3)))["params"]
    return params


def tokenizer_params(params):
    """The tokenizer's own params out of a training params tree."""
    return params["vae"] if "vae" in params else params


def tokenizer_loss(params, images, rng, config):
    """(scalar fp32 loss, dict of fp32 scalar metrics) for a batch of images in [-1, 1]."""
    del rng  # deterministic: no dropout in VAR's VQ-VAE
    lc = loss_config(config)
    lpips_params = None
    if lc["lpips_weight"] > 0:  # first, so missing weight files fail before any compute
        lpips_params = load_lpips(lc["lpips_vgg_path"], lc["lpips_lin_path"])
    x = images.astype(jnp.float32)
    rec, vq_loss, hits, _ = _vae(config).apply({"params": params["vae"]}, x)
    diff = rec - x
    l1, l2 = jnp.mean(jnp.abs(diff)), jnp.mean(jnp.square(diff))
    loss = lc["l1_weight"] * l1 + lc["l2_weight"] * l2 + lc["vq_weight"] * vq_loss
    metrics = {"rec_l1": l1, "rec_l2": l2, "vq_loss": vq_loss,
               "psnr": jnp.mean(psnr(jnp.clip(rec, -1, 1), x))}
    if lpips_params is not None:
        lp = jnp.mean(lpips_distance(lpips_params, rec, x))
        loss = loss + lc["lpips_weight"] * lp
        metrics["lpips"] = lp
    if lc["gan_weight"] > 0:
        disc = _disc(config, lc)
        d_frozen = jax.lax.stop_gradient(params["disc"])
        g_adv = hinge_g_loss(disc.apply({"params": d_frozen}, rec))
        logits_real = disc.apply({"params": params["disc"]}, x)
        logits_fake = disc.apply({"params": params["disc"]}, jax.lax.stop_gradient(rec))
        d_loss = hinge_d_loss(logits_real, logits_fake)
        loss = loss + lc["gan_weight"] * g_adv + d_loss
        metrics.update(g_adv=g_adv, d_loss=d_loss, logits_real=jnp.mean(logits_real),
                       logits_fake=jnp.mean(logits_fake))
    hit = hits > 0
    for k in range(hits.shape[0]):
        metrics[f"usage/s{k}"] = jnp.mean(hit[k].astype(jnp.float32))
    metrics["usage"] = jnp.mean(jnp.any(hit, axis=0).astype(jnp.float32))
    metrics["hits"] = hits  # (K, V) code counts, for update_code_age (not a logged scalar)
    return loss.astype(jnp.float32), metrics


def loss_fn(params, batch, rng, config):
    """Trainer entry point: `tokenizer_loss` on batch["image"]."""
    return tokenizer_loss(params, batch["image"], rng, config)


def eval_fn(params, batch, rng, config):
    """PSNR / MSE / L1 of the clipped reconstruction through all scales (what users get)."""
    del rng
    x = batch["image"].astype(jnp.float32) if isinstance(batch, dict) else batch.astype(jnp.float32)
    vae = _vae(config)
    v = {"params": tokenizer_params(params)}
    fhat = vae.apply(v, vae.apply(v, x, method=VQVAE.encode), method=VQVAE.fhat)
    rec = vae.apply(v, fhat, method=VQVAE.decode_fhat)
    return {"psnr": jnp.mean(psnr(rec, x)), "mse": jnp.mean(jnp.square(rec - x)),
            "l1": jnp.mean(jnp.abs(rec - x))}


# -- codebook care ------------------------------------------------------------------------------


def update_code_age(code_age, hits):
    """Steps since each code was last used: 0 where `hits` (K, V) or (V,) counts any use."""
    used = jnp.any(hits > 0, axis=0) if hits.ndim == 2 else hits > 0
    return jnp.where(used, 0, code_age + 1).astype(jnp.int32)


def restart_dead_codes(params, code_age, features, rng, *, max_age: int):
    """Replaces codes unused for >= max_age steps with random rows of `features` (N, z).

    `features` are encoder outputs (e.g. `VQVAE.encode_features` of a batch, flattened); each
    dead code takes a distinct random one (when N >= V). Returns (params, code_age with restarted codes
    reset to 0, number restarted). Works on a training tree ({"vae": ...}) or tokenizer params.
    """
    vae = tokenizer_params(params)
    codebook = vae["quantize"]["codebook"]
    feats = features.reshape(-1, codebook.shape[1]).astype(codebook.dtype)
    dead = code_age >= max_age
    v, n = codebook.shape[0], feats.shape[0]
    if n >= v:
        pick = jax.random.choice(rng, n, (v,), replace=False)
    else:  # fewer features than codes: some dead codes share a feature
        pick = jax.random.randint(rng, (v,), 0, n)
    new_codebook = jnp.where(dead[:, None], feats[pick], codebook)
    new_vae = dict(vae, quantize=dict(vae["quantize"], codebook=new_codebook))
    new_params = dict(params, vae=new_vae) if "vae" in params else new_vae
    return new_params, jnp.where(dead, 0, code_age), jnp.sum(dead)


def default_loss_config() -> ml_collections.ConfigDict:
    """config.loss for configs/ files."""
    return ml_collections.ConfigDict(dict(LOSS_DEFAULTS))
