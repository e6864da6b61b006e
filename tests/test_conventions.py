"""Conventions no other test pins: each stated here, checked by hand values or by dependency.

- coordinates are (lat, lon) in degrees, in that order, through SinEmbed (2^i cycles per 360°)
  and the geo MLP's input (latitude features first);
- Semantic Infusion taps the output of block `si_layer`, counted from 1;
- the EarthMapper samplers take the sampling temperature into account (the distribution tests
  in test_sampling_distribution.py check how; here: that it reaches the translate API).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.errors import InputError
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.geo import GeoEmbed, sin_embed, validate_coords
from earthmapper_jax.models.loading import Model
from earthmapper_jax.sampling import translate

PN = (1, 2)
V = 64
F = 4  # SinEmbed frequencies in the small geo embeddings below


def test_sin_embed_hand_values():
    # 90°: a quarter turn at f=1, half at f=2, a whole turn at f=4 and f=8
    got = np.asarray(sin_embed(jnp.array([90.0]), F))[0]
    sin = [1.0, 0.0, 0.0, 0.0]
    cos = [0.0, -1.0, 1.0, 1.0]
    np.testing.assert_allclose(got, sin + cos, atol=1e-6)
    # -180° and +180° are the same longitude
    a, b = np.asarray(sin_embed(jnp.array([-180.0, 180.0]), 16))
    np.testing.assert_allclose(a, b, atol=1e-5)
    # 30°: f · 30/360 turns
    got = np.asarray(sin_embed(jnp.array([30.0]), 3))[0]
    want = [math.sin(2 * math.pi * f * 30 / 360) for f in (1, 2, 4)] + \
           [math.cos(2 * math.pi * f * 30 / 360) for f in (1, 2, 4)]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_geo_features_are_latitude_then_longitude():
    """c_g = MLP(SinEmbed(lat) ⊕ SinEmbed(lon)): with mlp_in reading only its first 2F inputs,
    c_g moves with the latitude (column 0) and not with the longitude (column 1)."""
    geo = GeoEmbed(width=8, num_freqs=F, hidden=8)
    params = nn.meta.unbox(geo.init(jax.random.key(0), jnp.zeros((1, 2)))["params"])
    k = np.zeros(params["mlp_in"]["kernel"].shape, np.float32)  # longitude features feed nothing
    k[: 2 * F] = np.random.default_rng(1).normal(size=(2 * F, 8))
    params = {**params, "mlp_in": {**params["mlp_in"], "kernel": jnp.asarray(k)}}
    f = jax.jit(lambda c: geo.apply({"params": params}, c))
    base = np.asarray(f(jnp.array([[40.0, -74.0]])))
    lon_moved = np.asarray(f(jnp.array([[40.0, 100.0]])))
    lat_moved = np.asarray(f(jnp.array([[-10.0, -74.0]])))
    np.testing.assert_array_equal(lon_moved, base)
    assert np.abs(lat_moved - base).max() > 1e-3
    # and the features themselves: a hand-built c_g with identity layers
    eye_in = np.zeros((4 * F, 4 * F), np.float32)
    np.fill_diagonal(eye_in, 1.0)
    geo2 = GeoEmbed(width=4 * F, num_freqs=F, hidden=4 * F)
    p2 = nn.meta.unbox(geo2.init(jax.random.key(0), jnp.zeros((1, 2)))["params"])
    p2 = {**p2, "mlp_in": {"kernel": jnp.asarray(eye_in), "bias": jnp.zeros(4 * F)},
          "mlp_out": {"kernel": jnp.asarray(eye_in), "bias": jnp.zeros(4 * F)}}
    got = np.asarray(geo2.apply({"params": p2}, jnp.array([[90.0, 30.0]])))[0]
    feats = np.concatenate([np.asarray(sin_embed(jnp.array([90.0]), F))[0],
                            np.asarray(sin_embed(jnp.array([30.0]), F))[0]])
    np.testing.assert_allclose(got, feats * (1 / (1 + np.exp(-feats))), atol=1e-6)  # silu


def test_coordinate_range_is_checked_in_lat_lon_order():
    validate_coords(np.array([[45.0, 170.0]]))  # lon up to 180
    with pytest.raises(InputError, match="lat"):
        validate_coords(np.array([[170.0, 45.0]]))  # lat beyond 90


@pytest.mark.parametrize("si_layer", [1, 2])
def test_semantic_infusion_taps_block_si_layer_counted_from_one(si_layer):
    """The SI prediction depends on blocks 1..si_layer and on no later block."""
    mc = em.model_config("tiny", patch_nums=PN, vocab_size=V, attention="einsum", si_layer=si_layer)
    module = em.build(mc)
    params = em.init_params(mc, jax.random.key(0))
    assert mc.depth == 2
    rng = np.random.default_rng(0)
    L1 = sum(p * p for p in PN) - 1
    tf = [jnp.asarray(rng.normal(size=(1, L1, mc.cvae)), jnp.float32) for _ in range(2)]
    coords = jnp.array([[10.0, 20.0]])
    fn = jax.jit(lambda p: module.apply({"params": p}, coords, *tf)[1])
    base = np.asarray(fn(params))

    def moved(block):  # every weight of one block (0-based name) shifted
        blocks = dict(params["blocks"])
        blocks[block] = jax.tree.map(lambda x: x + 0.1, blocks[block])
        return np.asarray(fn({**params, "blocks": blocks}))

    for i in range(mc.depth):
        changed = np.abs(moved(f"layer_{i}") - base).max() > 1e-6
        assert changed == (i + 1 <= si_layer), f"block {i + 1} (1-based), si_layer={si_layer}"


def test_translate_uses_the_temperature():
    tok = tok_lib.Tokenizer.init(dict(ch=32, vocab_size=V, z_channels=8, image_size=16, ch_mult=(1, 2, 2, 4),
                                      num_res_blocks=1, using_sa=False, using_mid_sa=False, patch_nums=PN),
                                 jax.random.key(0))
    mc = em.model_config("tiny", patch_nums=PN, vocab_size=V, attention="einsum", sample_attention="einsum")
    params = em.init_params(mc, jax.random.key(1))
    leaves, tree = jax.tree_util.tree_flatten(params)  # off VAR's near-identity init: spread logits
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    model = Model(mc, params, tok)
    one = np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    sat = np.tile(one, (64, 1, 1, 1))  # one input, 64 independent draws
    coords = np.tile([[10.0, 20.0]], (64, 1))
    opts = dict(guidance=(0.0, 0.0, 0.0), top_k=0, top_p=0.0, decode=False)
    unique = {}
    for t in (0.01, 10.0):  # same key: only the temperature differs
        maps, _ = translate(model, sat, "sat2map", jax.random.key(3), coords=coords, temperature=t, **opts)
        unique[t] = len(np.unique(np.asarray(maps[-1]).reshape(64, -1), axis=0))
    # near-greedy draws collapse onto few token maps; hot draws (almost uniform over 64 codes) differ
    assert unique[10.0] > unique[0.01] + 10, unique
