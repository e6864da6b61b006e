"""Sampling rules on hand-computed values (fast): VAR's top-k / top-p filter, the candidate path,
temperature, and the guidance weights of each guidance form when branches coincide.
Distributions are checked by chi-square in tests/test_sampling_distribution.py, the guidance
formulas through the real sampler in tests/test_earthmapper_guidance.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax.sampling import filtering as Fl
from earthmapper_jax.sampling import guidance as G

NEG = -np.inf


def _kept(out):
    return np.isfinite(np.asarray(out))


def test_top_k_keeps_ties_with_the_kth():
    logits = jnp.array([1.0, 3.0, 2.0, 3.0, 0.0])
    np.testing.assert_array_equal(Fl.filter_top_k_top_p(logits, top_k=3), [NEG, 3.0, 2.0, 3.0, NEG])
    # k = 1 keeps both tied maxima
    np.testing.assert_array_equal(_kept(Fl.filter_top_k_top_p(logits, top_k=1)), [0, 1, 0, 1, 0])
    # k <= 0 or k >= V: no top-k filter
    for k in (0, -1, 5, 9):
        np.testing.assert_array_equal(Fl.filter_top_k_top_p(logits, top_k=k), logits)
    assert Fl.filter_top_k_top_p(logits.astype(jnp.bfloat16), top_k=2).dtype == jnp.float32


@pytest.mark.parametrize("top_p, kept", [
    (0.95, [1, 1, 1, 1]),   # remove cum <= 0.05: nothing
    (0.65, [0, 0, 1, 1]),   # ascending cum 0.1, 0.3, 0.6, 1.0: remove <= 0.35
    (0.85, [0, 1, 1, 1]),   # remove <= 0.15
    (0.3, [0, 0, 0, 1]),    # remove <= 0.7
])
def test_top_p_by_hand(top_p, kept):
    logits = jnp.log(jnp.array([0.2, 0.1, 0.3, 0.4]))
    out = Fl.filter_top_k_top_p(logits, top_p=top_p)
    np.testing.assert_array_equal(_kept(out), [bool(k) for k in [kept[1], kept[0], kept[2], kept[3]]])
    np.testing.assert_allclose(np.asarray(out)[_kept(out)], np.asarray(logits)[_kept(out)])
    vals, ids = Fl.candidates(logits, top_p=top_p)
    np.testing.assert_array_equal(ids, [3, 2, 0, 1])  # descending
    np.testing.assert_array_equal(_kept(vals), kept[::-1])


def test_top_p_never_removes_the_most_likely_token():
    logits = jnp.array([0.0, 1.0, 2.0])
    # 1 - 1e-9 rounds to 1.0 in float32: every cumulative sum is <= it, yet the top token stays
    np.testing.assert_array_equal(_kept(Fl.filter_top_k_top_p(logits, top_p=1e-9)), [0, 0, 1])
    np.testing.assert_array_equal(_kept(Fl.candidates(logits, top_p=1e-9)[0]), [1, 0, 0])


def test_top_k_then_top_p():
    logits = jnp.log(jnp.array([0.05, 0.15, 0.3, 0.5]))
    # top-k 3 drops 0.05; the rest renormalise to 0.158, 0.316, 0.526: top-p 0.8 drops <= 0.2
    out = Fl.filter_top_k_top_p(logits, top_k=3, top_p=0.8)
    np.testing.assert_array_equal(_kept(out), [0, 0, 1, 1])
    vals, ids = Fl.candidates(logits, top_k=3, top_p=0.8, tie_margin=1)
    np.testing.assert_array_equal(ids, [3, 2, 1, 0])
    np.testing.assert_array_equal(_kept(vals), [1, 1, 0, 0])


def test_traced_top_p_is_switched_by_value():
    logits = jnp.log(jnp.array([0.2, 0.1, 0.3, 0.4]))
    f = jax.jit(lambda p: Fl.filter_top_k_top_p(logits, top_p=p))
    np.testing.assert_array_equal(f(jnp.float32(0.0)), logits)   # 0 disables it
    np.testing.assert_array_equal(_kept(f(jnp.float32(0.65))), [0, 0, 1, 1])
    c = jax.jit(lambda p: Fl.candidates(logits, top_p=p)[0])
    assert _kept(c(jnp.float32(0.0))).all()
    np.testing.assert_array_equal(_kept(c(jnp.float32(0.65))), [1, 1, 0, 0])


def test_candidates_window_and_scatter():
    logits = jnp.array([[0.0, 5.0, 1.0, 4.0, 2.0, 3.0]])
    vals, ids = Fl.candidates(logits, top_k=2, tie_margin=1)  # k' = 3 candidates
    np.testing.assert_array_equal(ids, [[1, 3, 5]])
    np.testing.assert_array_equal(vals, [[5.0, 4.0, NEG]])
    assert ids.dtype == jnp.int32
    full = Fl.scatter_candidates(vals, ids, 6)
    np.testing.assert_array_equal(full, Fl.filter_top_k_top_p(logits, top_k=2))
    vals, ids = Fl.candidates(logits)  # no top-k: every token is a candidate
    assert ids.shape == (1, 6) and _kept(vals).all()
    np.testing.assert_array_equal(Fl.scatter_candidates(vals, ids, 6), logits)


def test_temperature_divides_before_the_filter():
    # p = (0.3, 0.7): at T = 1 top-p 0.6 removes the 0.3 token (cum 0.3 <= 0.4); at T = 10 the
    # distribution is nearly flat (0.479, 0.521), nothing is removed and both tokens are drawn
    logits = jnp.log(jnp.array([0.3, 0.7]))
    keys = jax.random.split(jax.random.key(0), 400)
    draw = jax.vmap(lambda k, T: Fl.sample_tokens(k, logits, top_p=0.6, temperature=T), (0, None))
    assert set(np.asarray(draw(keys, 1.0)).tolist()) == {1}
    cold = np.asarray(draw(keys, 10.0))
    assert 150 < int((cold == 0).sum()) < 250  # ~0.48 · 400
    assert Fl.sample_tokens(keys[0], logits, top_k=1).dtype == jnp.int32
    # top-k 1 is greedy whatever the temperature
    big = jnp.array([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    for T in (0.5, 1.0, 50.0):
        np.testing.assert_array_equal(Fl.sample_tokens(keys[1], big, top_k=1, temperature=T), [1, 0])


def test_gumbel_softmax_is_softmax_of_perturbed_logits():
    logits = jnp.array([[0.0, 1.0, 2.0]])
    key = jax.random.key(3)
    g = jax.random.gumbel(key, logits.shape, jnp.float32)
    np.testing.assert_allclose(Fl.gumbel_softmax(key, logits, 0.5),
                               jax.nn.softmax((logits + g) / 0.5, axis=-1), rtol=1e-6)


# ---------------------------------------------------------------------------------- guidance


def test_ramp_and_strength_by_hand():
    assert G.ramp(3, 10) == pytest.approx(1 / 3)
    assert G.ramp(0, 1) == 0.0 and G.ramp(1, 2) == 1.0
    np.testing.assert_allclose(G.alpha(0.5), 0.5)
    np.testing.assert_allclose(G.alpha(0.5, 3.0), 0.125)
    np.testing.assert_allclose(G.beta(0.0), 0.5)    # β_min by default 0.5
    np.testing.assert_allclose(G.beta(1.0), 1.0)
    np.testing.assert_allclose(G.beta(0.5, 0.2), 0.6)
    np.testing.assert_allclose(G.complexity_strength(0.5), 0.5)       # γ 1, α linear, no β
    np.testing.assert_allclose(G.complexity_strength(0.5, 0.0), 0.25)  # β(0) = 0.5
    np.testing.assert_allclose(G.complexity_strength(0.25, 1.0, gamma=4.0, alpha_power=0.5), 2.0)


def test_entropy_by_hand():
    p = jnp.log(jnp.array([0.75, 0.25]))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    np.testing.assert_allclose(G.normalized_entropy(p), h, rtol=1e-6)
    # over another axis
    np.testing.assert_allclose(G.normalized_entropy(jnp.stack([p, p], 1), axis=0), [h, h], rtol=1e-6)
    # complexity: weighted mean over valid positions, 0 where none is valid
    logits = jnp.stack([jnp.zeros(2), p, jnp.array([50.0, 0.0])])[None]  # entropies 1, h, ~0
    np.testing.assert_allclose(G.complexity(logits), [(1 + h) / 3], rtol=1e-5)
    np.testing.assert_allclose(G.complexity(logits, jnp.array([[False, True, True]])), [h / 2], rtol=1e-5)
    np.testing.assert_allclose(G.complexity(logits, jnp.zeros((1, 3), bool)), [0.0])


def test_var_cfg_per_sample():
    c = jnp.ones((2, 3, 4))
    u = jnp.zeros((2, 3, 4))
    out = G.var_cfg(c, u, jnp.array([1.0, 2.0]), 0.5)  # t = 0.5, 1.0
    np.testing.assert_allclose(out[0], 1.5)
    np.testing.assert_allclose(out[1], 2.0)


def test_missing_branch_with_a_weight_is_an_error():
    f = jnp.zeros((1, 2))
    with pytest.raises(ValueError, match=r"guidance weight 2.0 needs the 'nogeo' branch logits"):
        G.multi_term_cfg(f, (2.0, 0.0, 0.0), 1.0)
    with pytest.raises(ValueError, match=r"guidance weight 1.5 needs the 'uncond' branch logits"):
        G.multi_term_cfg(f, (0.0, 0.0, 1.5), 1.0)
    np.testing.assert_array_equal(G.multi_term_cfg(f + 1.0, (0.0, 0.0, 0.0), 3.0), f + 1.0)


# (w_nogeo, w_nocond, w_uncond) of triple (1, 2, 5), written out for both forms and every
# combination of coordinates given / condition image given
@pytest.mark.parametrize("form, geo, cond, want", [
    ("nested", True, True, (-4.0, 0.0, 5.0)),        # (t1 - t3, 0, t3)
    ("nested", False, True, (0.0, 0.0, 5.0)),        # nogeo = full; nocond = uncond: 5 + 0
    ("nested", True, False, (0.0, 0.0, 1.0)),        # nocond = full; nogeo = uncond: 5 + (-4)
    ("nested", False, False, (0.0, 0.0, 0.0)),       # every branch is the full one
    ("independent", True, True, (1.0, 2.0, 5.0)),
    ("independent", False, True, (0.0, 0.0, 5.0)),   # max(5, 2): one term, not summed
    ("independent", True, False, (0.0, 0.0, 5.0)),   # max(5, 1)
    ("independent", False, False, (0.0, 0.0, 0.0)),
])
def test_term_weights_written_out(form, geo, cond, want):
    assert G.term_weights((1, 2, 5), form, geo, cond) == want


def test_independent_merge_keeps_the_larger_weight():
    assert G.term_weights((1, 9, 5), "independent", False, True) == (0.0, 0.0, 9.0)
    assert G.term_weights((7, 2, 5), "independent", True, False) == (0.0, 0.0, 7.0)
    assert G.term_weights((3, 2, 1), "nested", True, False) == (0.0, 0.0, 3.0)
    with pytest.raises(AssertionError):
        G.term_weights((1, 1, 1), "chained", True, True)
    assert G.GUIDANCE_FORMS == ("nested", "independent")


@pytest.mark.parametrize("w, has_cond, want", [
    ((1.0, 2.0, 3.0), True, ("nogeo", "nocond", "uncond")),
    ((1.0, 2.0, 3.0), False, ("nogeo", "uncond")),
    ((0.0, 2.0, 0.0), True, ("nocond",)),
    ((-1.0, 0.0, 0.0), True, ("nogeo",)),
    ((0.0, 0.0, 0.0), True, ()),
])
def test_needed_branches(w, has_cond, want):
    assert G.needed_branches(w, has_cond) == want


def test_key_point_force_threshold_is_strict_and_keeps_dtype():
    V = 5  # q/(V-1) = q/4
    cond = jnp.array([0, 1, 2, 3, 4], jnp.int16)
    gen = jnp.array([1, 1, 1, 1, 1], jnp.int16)
    out = G.key_point_force(gen, cond, V, 0.5)  # 2/4 = 0.5 is not > 0.5
    np.testing.assert_array_equal(out, [1, 1, 1, 4, 4])
    assert out.dtype == jnp.int16
    np.testing.assert_array_equal(G.key_point_force(gen, cond, V, 0.0), [1, 2, 3, 4, 4])


def _filter_rows(logits, top_k, top_p):
    """VAR's filter restated per row in numpy (float64)."""
    out = []
    for row in np.asarray(logits, np.float64):
        row = row.copy()
        if 0 < top_k < row.size:
            row[row < np.sort(row)[::-1][top_k - 1]] = -np.inf
        if top_p > 0:
            order = np.argsort(row, kind="stable")  # ascending
            p = np.exp(row[order] - row[order].max())
            cum = np.cumsum(p / p.sum())
            remove = cum <= 1 - top_p
            remove[-1] = False
            row[order[remove]] = -np.inf
        out.append(row)
    return np.stack(out)


def test_filter_on_a_batch_of_bf16_rows():
    logits = jax.random.normal(jax.random.key(7), (4, 9)).astype(jnp.bfloat16) * 3
    for top_k, top_p in ((0, 0.6), (4, 0.0), (5, 0.8)):
        got = Fl.filter_top_k_top_p(logits, top_k=top_k, top_p=top_p)
        assert got.dtype == jnp.float32 and got.shape == (4, 9)
        want = _filter_rows(np.asarray(logits.astype(jnp.float32)), top_k, top_p)
        np.testing.assert_array_equal(_kept(got), np.isfinite(want))
        vals, ids = Fl.candidates(logits, top_k=top_k, top_p=top_p)
        np.testing.assert_array_equal(_kept(Fl.scatter_candidates(vals, ids, 9)), np.isfinite(want))
    # a batch of (2, 3, V) candidates scatters row by row
    vals, ids = Fl.candidates(jnp.arange(24.0).reshape(2, 3, 4) % 5, top_k=2, tie_margin=0)
    full = Fl.scatter_candidates(vals, ids, 4)
    assert full.shape == (2, 3, 4) and full.dtype == jnp.float32
    np.testing.assert_array_equal(_kept(full).sum(-1), 2)


def test_gumbel_softmax_normalises_over_the_vocabulary_of_each_row():
    logits = jax.random.normal(jax.random.key(8), (2, 3, 5)).astype(jnp.bfloat16)
    p = Fl.gumbel_softmax(jax.random.key(9), logits, 0.7)
    assert p.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(p).sum(-1), 1.0, rtol=1e-5)
