"""VAR (class-conditional) mode of `Model`: building the module and teacher-forced logits.

Public API:
    build(config) -> VAR module
    logits(model, labels, indices) -> (B, L, V) fp32
    check_labels(labels, num_classes) -> int32 (B,) array (InputError when out of range)
    check_indices(indices, patch_nums, vocab_size=None) -> list of K int32 (B, pn, pn)
    tokenizer_parts(tokenizer) -> (VQVAE module, tokenizer params): for use inside jit, so the
        tokenizer's weights are arguments of the compiled function, not baked-in constants.
(check_indices and tokenizer_parts serve the EarthMapper mode too.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.models import var as var_lib


def build(config):
    return var_lib.build(config)


def tokenizer_parts(tokenizer):
    return tokenizer.model, tokenizer.params


def check_labels(labels, num_classes: int, batch: int | None = None):
    """Class labels as an int32 (B,) array; num_classes itself is the null (unconditional) class."""
    if isinstance(labels, (int, np.integer)):
        if batch is None:
            raise InputError("a single class label needs a batch size")
        labels = np.full((batch,), num_classes if labels < 0 else labels)
    arr = np.asarray(labels) if not isinstance(labels, jax.Array) else labels
    if arr.ndim != 1:
        raise InputError(f"class labels must be a 1-D array (B,), got shape {tuple(arr.shape)}")
    if not isinstance(arr, jax.Array):
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"class labels must be integers, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() > num_classes):
            raise InputError(
                f"class labels must lie in [0, {num_classes}] ({num_classes} = unconditional), "
                f"got values in [{arr.min()}, {arr.max()}]")
    return jnp.asarray(arr, jnp.int32)


def check_indices(indices, patch_nums, vocab_size: int | None = None):
    """Token maps as a list of K int32 (B, pn, pn) arrays; accepts (B, pn*pn) too."""
    if not isinstance(indices, (list, tuple)) or len(indices) != len(patch_nums):
        n = len(indices) if isinstance(indices, (list, tuple)) else type(indices).__name__
        raise InputError(f"expected a list of {len(patch_nums)} token maps (one per scale), got {n}")
    out = []
    for si, (idx, pn) in enumerate(zip(indices, patch_nums)):
        shape = tuple(idx.shape)
        if len(shape) == 2 and shape[1] == pn * pn:
            idx = jnp.reshape(idx, (shape[0], pn, pn))
        elif len(shape) != 3 or shape[1:] != (pn, pn):
            raise InputError(f"token map {si} has shape {shape}, expected (B, {pn}, {pn})")
        if vocab_size is not None and not isinstance(idx, jax.core.Tracer):
            a = np.asarray(idx)
            if a.size and (a.min() < 0 or a.max() >= vocab_size):
                raise InputError(f"token map {si} has ids outside [0, {vocab_size})")
        out.append(jnp.asarray(idx, jnp.int32))
    if len({int(i.shape[0]) for i in out}) != 1:
        raise InputError("token maps have different batch sizes")
    return out


def _logits(module, tok_module, params, tok_params, labels, indices):
    x = tok_module.apply({"params": tok_params}, indices, method="teacher_forcing_inputs")
    return module.apply({"params": params}, labels, x)


def logits(model, labels, indices):
    """Teacher-forced logits (B, L, V) fp32 for class labels (B,) and ground-truth token maps."""
    c = model.config
    indices = check_indices(indices, c.patch_nums, c.vocab_size)
    labels = check_labels(labels, c.num_classes, batch=indices[0].shape[0])
    if labels.shape[0] != indices[0].shape[0]:
        raise InputError(f"{labels.shape[0]} labels for a batch of {indices[0].shape[0]} token maps")
    tok_module, tok_params = tokenizer_parts(model.tokenizer)
    fn = model.cached_jit(
        ("var_logits",), lambda: jax.jit(functools.partial(_logits, model.module, tok_module))
    )
    return fn(model.params, tok_params, labels, indices)
