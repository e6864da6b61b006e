"""Guidance functions (pure): VAR ramp CFG, multi-term CFG, Complexity Guidance, Key Point Force;
in-painting mask resizing."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax.sampling import guidance as G
from earthmapper_jax.sampling.inpaint_masks import box_mask, scale_masks
from earthmapper_jax.tokenizer.resize import bilinear_matrix


def _logits(seed, shape=(2, 3, 7)):
    return jax.random.normal(jax.random.key(seed), shape)


def test_var_cfg_ramp():
    c, u = _logits(0), _logits(1)
    assert G.ramp(0, 10) == 0.0 and G.ramp(9, 10) == 1.0
    np.testing.assert_allclose(G.var_cfg(c, u, 3.0, 0.0), c)
    np.testing.assert_allclose(G.var_cfg(c, u, 3.0, 0.5), 2.5 * c - 1.5 * u, rtol=1e-6)


def test_multi_term_cfg_terms_and_reduction_to_var():
    f, a, b, u = (_logits(i) for i in range(4))
    # only the "both" term: VAR's CFG
    np.testing.assert_allclose(G.multi_term_cfg(f, (0, 0, 2.0), 0.5, uncond=u), G.var_cfg(f, u, 2.0, 0.5), rtol=1e-6)
    out = G.multi_term_cfg(f, (1.0, 2.0, 3.0), 1.0, nogeo=a, nocond=b, uncond=u)
    np.testing.assert_allclose(out, f + (f - a) + 2 * (f - b) + 3 * (f - u), rtol=1e-5, atol=1e-6)
    # per-sample strength broadcasts over positions and vocabulary
    s = jnp.array([0.0, 1.0])
    out = G.multi_term_cfg(f, (0, 0, 1.0), s, uncond=u)
    np.testing.assert_allclose(out[0], f[0])
    np.testing.assert_allclose(out[1], 2 * f[1] - u[1], rtol=1e-6)
    with pytest.raises(ValueError, match="nocond"):
        G.multi_term_cfg(f, (0, 1.0, 0), 1.0)
    # traced weights: absent branches are skipped
    out = jax.jit(lambda w: G.multi_term_cfg(f, w, 1.0, uncond=u))(jnp.array([5.0, 5.0, 1.0]))
    np.testing.assert_allclose(out, 2 * f - u, rtol=1e-6)
    assert G.needed_branches((1, 0, 2), True) == ("nogeo", "uncond")
    assert G.needed_branches((0, 3, 0), False) == ()


def test_entropy_complexity_and_strength():
    V = 16
    uniform = jnp.zeros((1, 4, V))
    peaked = jnp.zeros((1, 4, V)).at[..., 0].set(100.0)
    np.testing.assert_allclose(G.normalized_entropy(uniform), 1.0, rtol=1e-6)
    np.testing.assert_allclose(G.normalized_entropy(peaked), 0.0, atol=1e-6)
    both = jnp.concatenate([uniform[:, :2], peaked[:, :2]], 1)
    np.testing.assert_allclose(G.complexity(both), [0.5], rtol=1e-6)
    np.testing.assert_allclose(G.complexity(both, jnp.array([[True, True, False, False]])), [1.0], rtol=1e-6)
    # s = gamma * alpha(r) * beta(C): 0 at the first scale, beta in [beta_min, 1]
    assert float(G.complexity_strength(0.0, jnp.array(1.0), gamma=3.0)) == 0.0
    np.testing.assert_allclose(G.complexity_strength(1.0, jnp.array([0.0, 1.0]), gamma=2.0, beta_min=0.25),
                               [0.5, 2.0])
    np.testing.assert_allclose(G.complexity_strength(0.5, None, gamma=2.0, alpha_power=2.0), 0.5)
    assert math.isclose(float(G.beta(0.5, 0.5)), 0.75)


def test_key_point_force_equations():
    V = 11  # normalised index q/(V-1) = q/10
    cond = jnp.array([[0, 5, 9, 10]])
    gen = jnp.array([[3, 3, 3, 7]])
    out = G.key_point_force(gen, cond, V, 0.85)  # key points: q_C/10 > 0.85 -> 9, 10
    np.testing.assert_array_equal(out, [[3, 3, 10, 10]])  # 3+9=12 -> 10, 7+10 -> 10 (clipped)
    np.testing.assert_array_equal(G.key_point_force(gen, cond, V, None), gen)
    np.testing.assert_array_equal(G.key_point_force(gen, cond, V, 1.0), gen)  # none exceed 1


def test_scale_masks_and_box():
    m = box_mask(16, (0.25, 0.25, 0.75, 0.75))
    assert m.sum() == 64 and m[4:12, 4:12].all()
    assert (box_mask(16, (0.25, 0.25, 0.75, 0.75), outpaint=True) == ~m).all()
    keep = (~m).astype(float)[None]
    masks = scale_masks(keep, (1, 2, 4, 8, 16))
    assert masks[0].all() and masks[-1].shape == (1, 16, 16)
    np.testing.assert_array_equal(masks[-1][0], ~m)
    np.testing.assert_array_equal(masks[2][0], ~box_mask(4, (0.25, 0.25, 0.75, 0.75)))
    # PyTorch bilinear (align_corners=False): rows sum to 1, 4 -> 2 samples between pixel pairs
    np.testing.assert_allclose(bilinear_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(bilinear_matrix(3, 7).sum(1), 1.0)
