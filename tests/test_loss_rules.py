"""Loss building blocks on hand-computed values (fast): Semantic Infusion's per-token losses,
per-scale mean (Eq. 13's 1/K over scales, each scale the mean over its tokens) and targets;
the tokenizer's code-age bookkeeping and dead-code restarts. The same rules are checked
through the real model in tests/test_si.py and tests/test_loss_masking.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax.models import semantic
from earthmapper_jax.tokenizer import losses


def test_per_token_losses_by_hand():
    pred = jnp.array([[3.0, 4.0], [1.0, 0.0]])
    target = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    # sqnorm: sum over features of the squared error (the paper's ||.||²₂)
    np.testing.assert_allclose(semantic.per_token_loss(pred, target), [25.0, 0.0])
    np.testing.assert_allclose(semantic.per_token_loss(pred, target, "sqnorm"), [25.0, 0.0])
    np.testing.assert_allclose(semantic.per_token_loss(pred, target, "mse"), [12.5, 0.0])
    # cosine: 1 - cos; orthogonal -> 1, same direction -> 0, opposite -> 2
    p = jnp.array([[1.0, 0.0], [2.0, 2.0], [1.0, 1.0]])
    t = jnp.array([[0.0, 3.0], [1.0, 1.0], [-1.0, -1.0]])
    np.testing.assert_allclose(semantic.per_token_loss(p, t, "cosine"), [1.0, 0.0, 2.0], atol=1e-6)
    # a zero vector does not divide by zero
    assert np.isfinite(float(semantic.per_token_loss(jnp.zeros((1, 2)), t[:1], "cosine")[0]))
    np.testing.assert_allclose(semantic.per_token_loss(jnp.zeros((1, 2)), t[:1], "cosine"), [1.0])
    # computed in fp32 from bf16 inputs
    assert semantic.per_token_loss(pred.astype(jnp.bfloat16), target).dtype == jnp.float32
    with pytest.raises(AssertionError):
        semantic.per_token_loss(pred, target, "l1")
    assert semantic.SI_LOSSES[0] == "sqnorm" and semantic.DEFAULT_WEIGHT == 0.5


def test_scale_mean_weighs_each_scale_once():
    # 2 scales: scale 0 one token, scale 1 three tokens; batch of 2
    scale = np.array([0, 1, 1, 1])
    per_token = jnp.array([[1.0, 2.0, 4.0, 6.0],
                           [3.0, 0.0, 0.0, 0.0]])
    total, per_scale = semantic.scale_mean(per_token, scale, 2)
    # scale 0: mean(1, 3) = 2; scale 1: mean(2, 4, 6, 0, 0, 0) = 2
    np.testing.assert_allclose(per_scale, [2.0, 2.0])
    np.testing.assert_allclose(total, 2.0)
    per_token = per_token.at[0, 0].set(5.0)  # scale 0: mean(5, 3) = 4; total (4 + 2) / 2
    total, per_scale = semantic.scale_mean(per_token, scale, 2)
    np.testing.assert_allclose(per_scale, [4.0, 2.0])
    np.testing.assert_allclose(total, 3.0)


def test_scale_mean_counts_only_weighted_tokens():
    scale = np.array([0, 1, 1])
    per_token = jnp.array([[1.0, 2.0, 10.0],
                           [7.0, 4.0, 10.0]])
    weight = jnp.array([[1, 1, 0],
                        [0, 1, 0]])
    total, per_scale = semantic.scale_mean(per_token, scale, 2, weight)
    # scale 0: only row 0 counts -> 1; scale 1: 2 and 4 count -> 3
    np.testing.assert_allclose(per_scale, [1.0, 3.0])
    np.testing.assert_allclose(total, 2.0)
    # a scale with nothing counted contributes 0, not NaN
    total, per_scale = semantic.scale_mean(per_token, scale, 2, jnp.array([[0, 1, 1], [0, 1, 1]]))
    np.testing.assert_allclose(per_scale, [0.0, 6.5])
    np.testing.assert_allclose(total, 3.25)
    # a scale id beyond the tokens present: its slot is 0
    _, per_scale = semantic.scale_mean(per_token, scale, 3)
    np.testing.assert_allclose(per_scale[2], 0.0)


def test_targets_from_a_grid_per_scale():
    # a 2x2 grid of 1-d features: scale 1 is its mean, scale 2 the grid itself, row-major
    grid = jnp.array([[[[1.0], [2.0]], [[3.0], [6.0]]]])
    got = semantic.targets_from_grid(grid, (1, 2))
    assert got.shape == (1, 5, 1) and got.dtype == jnp.float32
    np.testing.assert_allclose(got[0, :, 0], [3.0, 1.0, 2.0, 3.0, 6.0])
    # stored grids (4-d) are resized, stored per-scale rows (3-d) pass through
    np.testing.assert_allclose(semantic.as_targets(np.asarray(grid, np.float16), (1, 2)), got)
    rows = np.arange(10, dtype=np.float16).reshape(1, 5, 2)
    out = semantic.as_targets(rows, (1, 2))
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, rows.astype(np.float32))


# ------------------------------------------------------------------------------ codebook care


def test_code_age_counts_steps_since_last_use():
    age = jnp.array([0, 3, 7, 1], jnp.int32)
    hits = jnp.array([[0, 2, 0, 0],    # scale 0 uses code 1
                      [0, 0, 0, 5]])   # scale 1 uses code 3
    new = losses.update_code_age(age, hits)
    np.testing.assert_array_equal(new, [1, 0, 8, 0])
    assert new.dtype == jnp.int32
    np.testing.assert_array_equal(losses.update_code_age(age, jnp.array([1, 0, 0, 0])), [0, 4, 8, 2])


def _vae_params(codebook):
    return {"vae": {"quantize": {"codebook": codebook}, "encoder": {"w": jnp.ones(3)}}}


def test_dead_codes_take_distinct_features():
    V, Z = 4, 2
    codebook = jnp.zeros((V, Z))
    age = jnp.array([0, 5, 9, 4])
    feats = jnp.arange(12.0).reshape(6, Z) + 1.0  # 6 distinct non-zero rows
    new, age2, n = losses.restart_dead_codes(_vae_params(codebook), age, feats, jax.random.key(0), max_age=5)
    cb = np.asarray(new["vae"]["quantize"]["codebook"])
    assert int(n) == 2
    np.testing.assert_array_equal(age2, [0, 0, 0, 4])
    np.testing.assert_array_equal(cb[[0, 3]], 0.0)  # live codes untouched (age 4 < max_age 5)
    rows = {tuple(r) for r in np.asarray(feats)}
    assert tuple(cb[1]) in rows and tuple(cb[2]) in rows and tuple(cb[1]) != tuple(cb[2])
    assert new["vae"]["encoder"] is not None and set(new) == {"vae"}
    # tokenizer params (no "vae" level) work the same
    bare = {"quantize": {"codebook": codebook}}
    new_bare, _, _ = losses.restart_dead_codes(bare, age, feats, jax.random.key(0), max_age=5)
    np.testing.assert_array_equal(new_bare["quantize"]["codebook"], cb)


def test_dead_codes_with_fewer_features_than_codes():
    codebook = jnp.zeros((6, 2))
    age = jnp.full((6,), 10)
    feats = jnp.array([[1.0, 1.0], [2.0, 2.0]])
    new, age2, n = losses.restart_dead_codes(_vae_params(codebook), age, feats, jax.random.key(1), max_age=3)
    cb = np.asarray(new["vae"]["quantize"]["codebook"])
    assert int(n) == 6
    np.testing.assert_array_equal(age2, 0)
    assert {tuple(r) for r in cb} <= {(1.0, 1.0), (2.0, 2.0)}
    # features arrive (B, h, w, z): flattened to rows
    new, _, _ = losses.restart_dead_codes(_vae_params(codebook), age, feats.reshape(1, 1, 2, 2),
                                          jax.random.key(1), max_age=3)
    np.testing.assert_array_equal(new["vae"]["quantize"]["codebook"], cb)


def test_code_age_counts_a_single_hit_and_keeps_other_params():
    age = jnp.array([4, 4], jnp.int32)
    np.testing.assert_array_equal(losses.update_code_age(age, jnp.array([[1, 0], [0, 0]])), [0, 5])
    # restarting keeps every other entry of the training tree and of the quantizer
    params = {"vae": {"quantize": {"codebook": jnp.zeros((4, 2)), "phi_0": {"w": jnp.ones(1)}}},
              "disc": {"w": jnp.ones(2)}}
    feats = jnp.arange(8.0).reshape(4, 2) + 1.0  # exactly as many features as codes
    new, _, n = losses.restart_dead_codes(params, jnp.full((4,), 9), feats, jax.random.key(5), max_age=5)
    assert set(new) == {"vae", "disc"} and set(new["vae"]["quantize"]) == {"codebook", "phi_0"}
    cb = np.asarray(new["vae"]["quantize"]["codebook"])
    # n == V: every code takes a different feature (a permutation of the rows)
    assert int(n) == 4 and sorted(map(tuple, cb)) == sorted(map(tuple, np.asarray(feats)))


def test_tokenizer_loss_is_the_weighted_sum_by_hand():
    import ml_collections

    from earthmapper_jax.tokenizer.model import VQVAE
    from earthmapper_jax.tokenizer.config import model_config
    from earthmapper_jax.tokenizer import init_params

    micro = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, vocab_size=16,
                 image_size=8, patch_nums=(1, 2, 4))
    weights = dict(l1_weight=0.3, l2_weight=0.7, vq_weight=0.2)
    cfg = ml_collections.ConfigDict({"model": micro, "loss": weights})
    vae_params = init_params(micro, jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3), minval=-1, maxval=1)
    loss, m = losses.tokenizer_loss({"vae": vae_params}, x, None, cfg)
    rec, vq, hits, _ = VQVAE(model_config(micro)).apply({"params": vae_params}, x)
    l1, l2 = float(jnp.mean(jnp.abs(rec - x))), float(jnp.mean((rec - x) ** 2))
    np.testing.assert_allclose(float(m["rec_l1"]), l1, rtol=1e-5)
    np.testing.assert_allclose(float(m["rec_l2"]), l2, rtol=1e-5)
    np.testing.assert_allclose(float(m["vq_loss"]), float(vq), rtol=1e-5)
    np.testing.assert_allclose(float(loss), 0.3 * l1 + 0.7 * l2 + 0.2 * float(vq), rtol=1e-5)
    assert loss.dtype == jnp.float32
    # usage: the share of codes hit at each scale, and at any scale
    h = np.asarray(hits) > 0
    np.testing.assert_array_equal(m["hits"], hits)
    for k in range(3):
        np.testing.assert_allclose(float(m[f"usage/s{k}"]), h[k].mean())
    np.testing.assert_allclose(float(m["usage"]), h.any(0).mean())
    assert "g_adv" not in m and "lpips" not in m  # GAN and LPIPS off by default
    # a plain dict config.loss works the same; missing keys take the defaults
    lc = losses.loss_config({"loss": {"l1_weight": 0.5}})
    assert lc["l1_weight"] == 0.5 and lc["l2_weight"] == 1.0 and lc["gan_weight"] == 0.0
    assert losses.loss_config(cfg)["vq_weight"] == 0.2
