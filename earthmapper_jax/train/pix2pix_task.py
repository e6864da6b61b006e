"""Training pix2pix (task "pix2pix"): loss, data, eval, sample grid, export.

The model is models/pix2pix.py (config.model, configs/pix2pix.py); one model per direction
(config.model.direction). Data: the image-pair pipeline every task reads (train/image_data.py);
the source is sat_image for sat2map, map_image for map2sat.

    make_task() -> Task                 (train/trainer.REGISTRY["pix2pix"])
    check_config(config) -> model fields   InputError for an impossible config.model/loss/data
    init_params(config, rng) -> {"gen": U-Net params, "disc": PatchGAN params} (boxed, named)
    loss_terms(params, batch, rng, config) -> (dict of the three scalar terms, metrics)
    loss_fn(params, batch, rng, config, frozen=None) -> (loss, metrics)
    eval_fn -> l1 (on the [0, 1] scale), psnr, ssim of the translation (evaluation/pixels.py)
    sample_fn: PNG grid, rows [source | translation | target]; returns the rows' L1
    export(params, config, workdir) -> WORKDIR/model, kind "pix2pix": the generator alone,
        self-contained (no tokenizer); `earthmapper_jax.load` opens it

Loss (config.loss): l1_weight (λ = 100, the paper's) · |G(x) - y| + gan_weight ·
G_adv + D_loss, one scalar as in the tokenizer task: G_adv scores G(x) with the discriminator's
params behind a stop-gradient, D_loss scores the real pair and a stop-gradient copy of G(x), so
one gradient trains both and G_adv never moves D, D_loss never moves G. GAN loss
(config.loss.gan_loss): "vanilla", the paper's (sigmoid cross-entropy, the generator
maximising log D(x, G(x)), D's objective halved), or "lsgan" (least squares, targets 1 / 0).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from earthmapper_jax.errors import InputError
from earthmapper_jax.evaluation import pixels
from earthmapper_jax.io.checkpoint import save_params
from earthmapper_jax.io.images import write_grid
from earthmapper_jax.models import pix2pix
from earthmapper_jax.train import image_data
from earthmapper_jax.train.tasks import Task

GAN_LOSSES = ("vanilla", "lsgan")
LOSS_DEFAULTS = dict(l1_weight=100.0, gan_weight=1.0, gan_loss="vanilla")


def loss_config(config) -> dict:
    """config.loss with defaults filled in (a plain dict)."""
    out = dict(LOSS_DEFAULTS)
    loss = config.get("loss", None)
    if loss is not None:
        out.update(loss.to_dict() if hasattr(loss, "to_dict") else dict(loss))
    return out


def check_config(config) -> dict:
    """config.model checked and filled in; config.loss and config.data checked (InputError)."""
    mc = pix2pix.model_config(config.model)
    lc = loss_config(config)
    if lc["gan_loss"] not in GAN_LOSSES:
        raise InputError(f"config.loss.gan_loss={lc['gan_loss']!r}; expected one of {GAN_LOSSES}")
    if int(config.data.image_size) != int(mc["image_size"]):
        raise InputError(f"config.data.image_size={config.data.image_size} but "
                         f"config.model.image_size={mc['image_size']}; set them equal")
    return mc


def default_loss_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(LOSS_DEFAULTS))


def source_target(batch, direction: str):
    """(source, target) images of a batch for one direction."""
    src, tgt = ("sat_image", "map_image") if direction == "sat2map" else ("map_image", "sat_image")
    return jnp.asarray(batch[src], jnp.float32), jnp.asarray(batch[tgt], jnp.float32)


def init_params(config, rng):
    """The params; checks the config first (init is where a pix2pix run enters)."""
    mc = check_config(config)
    s = int(mc["image_size"])
    x = jnp.zeros((1, s, s, 3), jnp.float32)
    k_gen, k_disc = jax.random.split(rng)
    return {"gen": pix2pix.build(mc).init(k_gen, x)["params"],
            "disc": pix2pix.build_discriminator(mc).init(k_disc, x, x)["params"]}


def _gan_terms(kind, real, fake_for_d, fake_for_g):
    """(discriminator loss, generator's adversarial loss) from logits."""
    if kind == "lsgan":
        d = 0.5 * (jnp.mean(jnp.square(real - 1.0)) + jnp.mean(jnp.square(fake_for_d)))
        return d, jnp.mean(jnp.square(fake_for_g - 1.0))
    bce = optax.sigmoid_binary_cross_entropy
    d = 0.5 * (jnp.mean(bce(real, jnp.ones_like(real))) + jnp.mean(bce(fake_for_d, jnp.zeros_like(fake_for_d))))
    return d, jnp.mean(bce(fake_for_g, jnp.ones_like(fake_for_g)))  # non-saturating, as the paper


def loss_terms(params, batch, rng, config):
    """({"l1", "g_adv", "d_loss"} scalars, metrics); see module doc for the stop-gradients."""
    mc, lc = pix2pix.fields(config.model), loss_config(config)
    x, y = source_target(batch, mc["direction"])
    fake = pix2pix.build(mc).apply({"params": params["gen"]}, x, train=True,
                                   rngs={"dropout": rng})
    disc = pix2pix.build_discriminator(mc)
    frozen_d = jax.lax.stop_gradient(params["disc"])
    logits_g = disc.apply({"params": frozen_d}, x, fake)
    logits_real = disc.apply({"params": params["disc"]}, x, y)
    logits_fake = disc.apply({"params": params["disc"]}, x, jax.lax.stop_gradient(fake))
    d_loss, g_adv = _gan_terms(lc["gan_loss"], logits_real, logits_fake, logits_g)
    l1 = jnp.mean(jnp.abs(fake - y))
    metrics = {"l1": l1, "g_adv": g_adv, "d_loss": d_loss,
               "d_real": jnp.mean(jax.nn.sigmoid(logits_real)),
               "d_fake": jnp.mean(jax.nn.sigmoid(logits_fake))}
    return {"l1": l1, "g_adv": g_adv, "d_loss": d_loss}, metrics


def loss_fn(params, batch, rng, config, frozen=None):
    lc = loss_config(config)
    terms, metrics = loss_terms(params, batch, rng, config)
    loss = lc["l1_weight"] * terms["l1"] + lc["gan_weight"] * terms["g_adv"] + terms["d_loss"]
    metrics["loss"] = loss
    return loss.astype(jnp.float32), metrics


def translate_batch(gen_params, x, rng, config, dropout=None):
    """G(x) in [-1, 1]; dropout on by default when config.model.test_dropout (the paper)."""
    mc = pix2pix.fields(config.model)
    on = mc["test_dropout"] if dropout is None else bool(dropout)
    return pix2pix.build(mc).apply({"params": gen_params}, x, train=on, rngs={"dropout": rng})


def eval_fn(params, batch, rng, config, frozen=None):
    x, y = source_target(batch, pix2pix.fields(config.model)["direction"])
    out = jnp.clip(translate_batch(params["gen"], x, rng, config), -1, 1)
    a, b = (out + 1) / 2, (y + 1) / 2
    return {"l1": jnp.mean(jnp.abs(a - b)), "psnr": jnp.mean(pixels.psnr(a, b)),
            "ssim": jnp.mean(pixels.ssim(a, b))}


def sample_fn(params, batch, rng, config, path, frozen=None):
    """PNG grid of [source | translation | target] rows; returns their L1 ([0, 1] scale)."""
    x, y = source_target(batch, pix2pix.fields(config.model)["direction"])
    out = np.asarray(translate_batch(jax.device_get(params)["gen"], x, rng, config))
    x, y = np.asarray(x), np.asarray(y)
    if jax.process_index() == 0:
        write_grid(path, [[x[i], out[i], y[i]] for i in range(len(x))])
    return {"l1": float(np.mean(np.abs(out - y)) / 2)}


def model_dict(config) -> dict:
    """The exported model's config (config.json "config")."""
    return pix2pix.fields(config.model)


def export(params, config, workdir):
    """WORKDIR/model: the generator and its config; `earthmapper_jax.load` opens it."""
    return save_params(pathlib.Path(workdir) / "model", params["gen"], model_dict(config),
                       kind="pix2pix", overwrite=True)


def make_task() -> Task:
    return Task(name="pix2pix", init_params=init_params, loss_fn=loss_fn,
                train_data=image_data.train_data, eval_data=image_data.eval_data,
                eval_fn=eval_fn, sample_fn=sample_fn, export=export,
                examples_per_epoch=image_data.examples_per_epoch)
