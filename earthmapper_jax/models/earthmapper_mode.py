"""EarthMapper mode of `Model` (earthmapper_jax.load): building the module, teacher-forced logits.

    build(config) -> EarthMapper module
    logits(model, coords, indices) -> (B, L, V) fp32 in the joint layout (L = 2·Σpn²; per scale
        the satellite block then the map block; split with layout.from_joint)
        coords: (B, 2) (lat, lon) degrees, a (2,) pair for the whole batch, or None (the null
        coordinate); indices: (sat_maps, map_maps), each a list of K token maps (B, pn, pn).
"""

from __future__ import annotations

import functools

import jax

from earthmapper_jax.errors import InputError
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.geo import validate_coords
from earthmapper_jax.models.var_mode import check_indices, tokenizer_parts


def build(config):
    return em.build(config)


def check_pair(indices, config):
    """(sat_maps, map_maps) checked as two lists of K int32 (B, pn, pn) with one batch size."""
    if isinstance(indices, dict):
        indices = (indices.get("sat"), indices.get("map"))
    if not isinstance(indices, (list, tuple)) or len(indices) != 2 or indices[0] is None or indices[1] is None:
        raise InputError("EarthMapper logits need (satellite token maps, map token maps)")
    sat = check_indices(indices[0], config.patch_nums, config.vocab_size)
    mp = check_indices(indices[1], config.patch_nums, config.vocab_size)
    if sat[0].shape[0] != mp[0].shape[0]:
        raise InputError(f"{sat[0].shape[0]} satellite vs {mp[0].shape[0]} map token maps")
    return sat, mp


def _logits(module, tok_module, params, tok_params, coords, sat, mp):
    tp = {"params": tok_params}
    tf_sat = tok_module.apply(tp, sat, method="teacher_forcing_inputs")
    tf_map = tok_module.apply(tp, mp, method="teacher_forcing_inputs")
    logits, _ = module.apply({"params": params}, coords, tf_sat, tf_map)
    return logits


def logits(model, coords, indices):
    """Teacher-forced joint logits (see module doc)."""
    sat, mp = check_pair(indices, model.config)
    coords = validate_coords(coords, sat[0].shape[0])
    tok_module, tok_params = tokenizer_parts(model.tokenizer)
    fn = model.cached_jit(
        ("earthmapper_logits",),
        lambda: jax.jit(functools.partial(_logits, model.module, tok_module)))
    return fn(model.params, tok_params, coords, sat, mp)
