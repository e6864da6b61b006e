"""Guidance: the pure functions (VAR ramp CFG, multi-term CFG in its nested (ControlVAR) and
independent forms, Complexity Guidance, Key Point Force, in-painting mask resizing), and through
the real sampler: equal triples are plain CFG, coordinate-less guidance computes each distinct
branch once, and Key Point Force changes exactly the key-point tokens."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.loading import Model
from earthmapper_jax.sampling import earthmapper_sampler as S
from earthmapper_jax.sampling import guidance as G
from earthmapper_jax.sampling.inpaint_masks import box_mask, scale_masks
from earthmapper_jax.scales import flatten_tokens, split_tokens
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


def test_nested_form_is_controlvars_chain_and_merges_branches():
    F, A, Bc, U = (_logits(i) for i in range(4))
    t1, t2, t3, s = 1.5, 7.0, 4.0, 0.6
    w = G.term_weights((t1, t2, t3), "nested", True, True)
    # ControlVAR: (1+t1) l_full + (t2'-t1) l_2 + (t3-t2') l_3 - t3 l_uncond with l_2 = l_3 = nogeo
    want = (1 + s * t1) * F + s * (t3 - t1) * A - s * t3 * U
    got = G.multi_term_cfg(F, w, s, nogeo=A, nocond=None if w[1] == 0 else Bc, uncond=U)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for t in (2.0, 4.0, 8.0):  # equal triples: plain CFG of that strength, two branches
        w = G.term_weights((t, t, t), "nested", True, True)
        assert G.needed_branches(w, True) == ("uncond",)
        np.testing.assert_allclose(G.multi_term_cfg(F, w, s, uncond=U), G.var_cfg(F, U, t, s), rtol=1e-5)
    # no coordinates: nogeo = full, nocond = uncond -> one extra branch, weight not doubled
    for form in G.GUIDANCE_FORMS:
        w = G.term_weights((2, 2, 2), form, False, True)
        assert G.needed_branches(w, True) == ("uncond",) and w[2] == 2.0
    assert G.term_weights((2, 2, 2), "independent", True, True) == (2.0, 2.0, 2.0)
    # joint generation (no condition image): nogeo = uncond
    assert G.term_weights((3, 0, 0), "nested", True, False) == (0.0, 0.0, 3.0)


# ----------------------------------------------------------------------------- real sampler

TOK_CFG = dict(ch=32, vocab_size=512, z_channels=8, image_size=48, ch_mult=(1, 2, 2, 4), num_res_blocks=1,
               using_sa=False, using_mid_sa=False, patch_nums=(1, 2, 3, 4, 6))


@pytest.fixture(scope="module")
def model():
    tok = tok_lib.Tokenizer.init(TOK_CFG, jax.random.key(0))
    mc = em.model_config("tiny", attention="einsum", sample_attention="einsum",
                         patch_nums=TOK_CFG["patch_nums"])
    params = em.init_params(mc, jax.random.key(1))
    leaves, tree = jax.tree_util.tree_flatten(params)  # off VAR's near-identity init
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    return Model(mc, params, tok)


def _translate(model, images, coords, **opts):
    """sat->map through the sampler's host path; returns (target maps, guided logits, branches)."""
    o = S._options("sat2map", dict(dict(top_k=1, top_p=0.0, decode=False), **opts))
    src = flatten_tokens(model.tokenizer.encode(images))
    B = src.shape[0]
    coords = np.full((B, 2), np.nan, np.float32) if coords is None else np.asarray(coords, np.float32)
    zeros = jnp.zeros_like(src)
    known, keep = (src, zeros), (jnp.ones(src.shape, bool), jnp.zeros(src.shape, bool))
    out = S._run(model, coords, known, keep, ["cond", "free"], jax.random.key(0), o, return_logits=True)
    w = G.term_weights(o["guidance"], o["guidance_form"], not np.isnan(coords).all(), True)
    return out["tokens"][1], [lg[1] for lg in out["logits"]], ("full",) + G.needed_branches(w, True), src


@pytest.mark.parametrize("coords", [[[30.0, 120.0], [31.0, 121.5]], None])
def test_equal_triples_are_plain_cfg_through_the_sampler(model, coords):
    images = np.random.default_rng(3).uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32)
    for t in (2.0, 8.0):
        a, la, branches, _ = _translate(model, images, coords, guidance=(t, t, t), kpf_tau=None)
        b, lb, _, _ = _translate(model, images, coords, guidance=t, kpf_tau=None)  # a number = plain CFG
        c, lc, _, _ = _translate(model, images, coords, guidance=(0.0, 0.0, t), kpf_tau=None,
                                 guidance_form="independent")
        assert branches == ("full", "uncond")
        for x, y, z in zip(la, lb, lc):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-5)
            np.testing.assert_allclose(np.asarray(x), np.asarray(z), rtol=0, atol=1e-5)
        for x, y in zip(a, c):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # independent (2,2,2) without coordinates: nocond = uncond, computed once, weight 2 not 4
    if coords is None:
        d, ld, branches, _ = _translate(model, images, None, guidance=(2.0, 2.0, 2.0), kpf_tau=None,
                                        guidance_form="independent")
        e, le, _, _ = _translate(model, images, None, guidance=2.0, kpf_tau=None)
        assert branches == ("full", "uncond")
        for x, y in zip(ld, le):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-5)


def test_key_point_force_changes_exactly_the_key_point_tokens(model):
    """Greedy sampling: before KPF each scale's token is the argmax of its guided logits; with
    KPF the sampler's output differs from that argmax exactly at the key points (condition
    index / (V-1) > τ, where the clipped sum differs), at every scale."""
    V, tau = TOK_CFG["vocab_size"], 0.9
    images = np.random.default_rng(5).uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32)
    coords = [[30.0, 120.0], [31.0, 121.5]]
    maps, logits, _, src = _translate(model, images, coords, kpf_tau=tau)
    cond = split_tokens(src, TOK_CFG["patch_nums"])
    n_key = 0
    for k, (got, lg, c) in enumerate(zip(maps, logits, cond)):
        got, c = np.asarray(got).reshape(2, -1), np.asarray(c).reshape(2, -1)
        greedy = np.asarray(lg).argmax(-1)
        key = c / (V - 1) > tau
        forced = np.clip(greedy + c, 0, V - 1)
        np.testing.assert_array_equal(got[~key], greedy[~key], err_msg=f"scale {k}: a non-key token changed")
        np.testing.assert_array_equal(got[key], forced[key], err_msg=f"scale {k}: a key point not forced")
        n_key += int((key & (forced != greedy)).sum())
    assert n_key > 0  # the check is not vacuous
    off, _, _, _ = _translate(model, images, coords, kpf_tau=None)
    assert any((np.asarray(x) != np.asarray(y)).any() for x, y in zip(maps, off))
