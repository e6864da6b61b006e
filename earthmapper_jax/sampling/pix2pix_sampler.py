"""Translating with a pix2pix model (`earthmapper_jax.load` of a kind "pix2pix" directory).

    translate(model, images, direction, rng, coords=None, dropout=None) -> (None, images)
        images: (B, S, S, 3) float in [-1, 1], S = model.config.image_size; returns the
        translations (B, S, S, 3) in [-1, 1] (no tokens: the first element is None).
        A pix2pix model translates the one direction it was trained for; the other is an
        InputError. dropout: None = the model's test_dropout (on, as the paper: its only
        noise, so `rng` matters), True / False to force. coords: accepted for the common
        signature and unused (pix2pix has no coordinate input).

The generator is compiled once per model and dropout setting (Model.cached_jit); its weights
are an argument, so `with_weights` copies reuse it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.models.pix2pix import DIRECTIONS


def _apply(module, dropout, params, x, rng):
    return module.apply({"params": params}, x, train=dropout, rngs={"dropout": rng})


def _check_images(images, size: int):
    shape = tuple(np.shape(images))
    if len(shape) != 4 or shape[1:] != (size, size, 3):
        raise InputError(f"pix2pix images must be (B, {size}, {size}, 3) in [-1, 1], got shape {shape}")
    return jnp.asarray(images, jnp.float32)


def check_direction(model, direction) -> None:
    """InputError unless `direction` is the one direction this pix2pix model was trained for."""
    if direction not in DIRECTIONS:
        raise InputError(f"unknown direction {direction!r}; expected one of {list(DIRECTIONS)}")
    if direction != model.config.direction:
        raise InputError(f"this pix2pix model translates {model.config.direction} only "
                         f"(asked for {direction}; pix2pix trains one model per direction)")


def translate(model, images, direction, rng, coords=None, dropout=None):
    """Source tiles -> target tiles (see module doc)."""
    del coords
    c = model.config
    check_direction(model, direction)
    x = _check_images(images, int(c.image_size))
    on = bool(c.get("test_dropout", True)) if dropout is None else bool(dropout)
    fn = model.cached_jit(("pix2pix_translate", on),
                          lambda: jax.jit(functools.partial(_apply, model.module, on)))
    return None, fn(model.params, x, rng)
