"""Stochastic sampling draws from the filtered, tempered softmax (chi-square, fixed seeds).

The expected distribution is computed here from VAR's rule, written out independently of
sampling/filtering.py: logits / temperature, top-k (keep logits >= the k-th largest), then
top-p (sort ascending, drop tokens whose cumulative probability is <= 1 - top_p, never the
most likely one), softmax. Every test uses a fixed seed, so it is deterministic; the stated
acceptance level is p > 1e-3, and each test also shows its power: the same draws are rejected
(p < 1e-6) against the distribution a plausible bug would give (filter skipped, temperature
ignored).

For the samplers (VAR class-conditional with CFG, the EarthMapper joint sampler with CFG),
different rows draw from different distributions (each row's coarser scales differ), so the
draws are binned by the rank of the drawn token in that row's own expected distribution;
the expected count of rank r is the sum over draws of p(rank r) (a sum of independent
non-identical categoricals: Pearson's statistic is then conservative, never falsely red).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models import var as var_lib
from earthmapper_jax.models.var_mode import tokenizer_parts
from earthmapper_jax.sampling import earthmapper_sampler as S
from earthmapper_jax.sampling.filtering import sample_tokens
from earthmapper_jax.sampling.var_sampler import sample_var_tokens

V = 64
PN = (1, 2)
ACCEPT, REJECT = 1e-3, 1e-6
TOK_CFG = dict(ch=32, vocab_size=V, z_channels=8, image_size=16, ch_mult=(1, 2, 2, 4), num_res_blocks=1,
               using_sa=False, using_mid_sa=False, patch_nums=PN)


def expected_probs(logits, top_k=0, top_p=0.0, temperature=1.0):
    """VAR's filtered softmax, float64, for logits (..., V)."""
    lg = np.asarray(logits, np.float64) / temperature
    out = np.empty_like(lg)
    for idx in np.ndindex(lg.shape[:-1]):
        row = lg[idx].copy()
        if 0 < top_k < row.size:
            kth = np.sort(row)[::-1][top_k - 1]
            row[row < kth] = -np.inf
        if top_p > 0:
            asc = np.argsort(row, kind="stable")
            p = np.exp(row[asc] - row.max())
            cum = np.cumsum(p / p.sum())
            drop = cum <= 1.0 - top_p
            drop[-1] = False
            row[asc[drop]] = -np.inf
        e = np.exp(row - row.max())
        out[idx] = e / e.sum()
    return out


def rank_chi2(draws, probs):
    """p-value of draws (N,) against per-draw distributions probs (N, V), binned by rank."""
    draws, probs = np.asarray(draws).reshape(-1), np.asarray(probs).reshape(-1, probs.shape[-1])
    p_drawn = probs[np.arange(len(draws)), draws]
    if (p_drawn == 0).any():
        return 0.0  # a token the filter removes was drawn
    order = np.argsort(-probs, axis=-1, kind="stable")
    ranks = np.argmax(order == draws[:, None], axis=-1)
    sorted_p = np.take_along_axis(probs, order, -1)
    expected = sorted_p.sum(0)
    observed = np.bincount(ranks, minlength=probs.shape[-1]).astype(np.float64)
    # merge the tail so every bin expects >= 5
    obs_bins, exp_bins, o, e = [], [], 0.0, 0.0
    for ob, ex in zip(observed, expected):
        o, e = o + ob, e + ex
        if e >= 5:
            obs_bins.append(o), exp_bins.append(e)
            o, e = 0.0, 0.0
    obs_bins[-1] += o
    exp_bins[-1] += e
    obs_bins, exp_bins = np.array(obs_bins), np.array(exp_bins)
    if len(obs_bins) < 2:
        return 1.0
    return float(stats.chisquare(obs_bins, exp_bins * obs_bins.sum() / exp_bins.sum()).pvalue)


# ----------------------------------------------------------------------------- the filter itself


@pytest.mark.parametrize("top_k,top_p,temperature", [(10, 0.0, 1.0), (0, 0.8, 1.0), (20, 0.9, 0.7),
                                                     (0, 0.0, 2.0), (0, 0.6, 0.5)])
def test_sample_tokens_follows_the_filtered_softmax(top_k, top_p, temperature):
    logits = jnp.asarray(np.random.default_rng(0).normal(0, 2.0, (V,)), jnp.float32)
    n = 20000
    draws = np.asarray(jax.jit(lambda r: sample_tokens(r, jnp.broadcast_to(logits, (n, V)), top_k,
                                                       jnp.float32(top_p), jnp.float32(temperature)))(
        jax.random.key(1)))
    want = np.broadcast_to(expected_probs(logits, top_k, top_p, temperature), (n, V))
    assert rank_chi2(draws, want) > ACCEPT
    wrong = [expected_probs(logits, 0, 0.0, temperature)] if (top_k or top_p) else []
    if temperature != 1.0:
        wrong.append(expected_probs(logits, top_k, top_p, 1.0))
    for w in wrong:
        assert rank_chi2(draws, np.broadcast_to(w, (n, V))) < REJECT


# ----------------------------------------------------------------------------- through the samplers


def _perturb(params, seed, scale=0.3):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def tok_parts():
    return tokenizer_parts(tok_lib.Tokenizer.init(TOK_CFG, jax.random.key(0)))


def test_var_sampler_with_cfg_draws_from_the_guided_filtered_softmax(tok_parts):
    tok_module, tok_params = tok_parts
    c = var_lib.var_config("tiny", patch_nums=PN, vocab_size=V, attention="einsum")
    module = var_lib.build(c)
    params = _perturb(var_lib.init_params(c, jax.random.key(3)), 4)
    B, top_k, top_p, temperature = 1024, 30, 0.9, 0.6
    labels = jnp.full((B,), 3, jnp.int32)
    fn = jax.jit(lambda r, cfg: sample_var_tokens(
        module, tok_module, params, tok_params, labels, r, cfg, jnp.float32(top_p), jnp.float32(temperature),
        top_k=top_k, more_smooth=False, guided=True, decode=False, return_logits=True))
    maps, _, logits = fn(jax.random.key(5), jnp.float32(3.0))
    draws = np.concatenate([np.asarray(m).reshape(B, -1) for m in maps], 1)
    lg = np.concatenate([np.asarray(x) for x in logits], 1)  # (B, Σpn², V) guided, untempered
    want = expected_probs(lg, top_k, top_p, temperature)
    assert rank_chi2(draws, want) > ACCEPT
    assert rank_chi2(draws, expected_probs(lg, top_k, top_p, 1.0)) < REJECT  # temperature ignored
    assert rank_chi2(draws, expected_probs(lg, 0, 0.0, temperature)) < REJECT  # filter skipped


def test_joint_sampler_with_cfg_draws_from_the_guided_filtered_softmax(tok_parts):
    tok_module, tok_params = tok_parts
    mc = em.model_config("tiny", patch_nums=PN, vocab_size=V, attention="einsum", sample_attention="einsum")
    module = em.build(mc)
    params = _perturb(em.init_params(mc, jax.random.key(3)), 4, scale=0.05)
    top_k = 30

    def run(temperature, complexity, top_p, B):
        coords = jnp.tile(jnp.array([[30.0, 120.0]]), (B, 1))
        zero, no = jnp.zeros((B, sum(p * p for p in PN)), jnp.int32), jnp.zeros((B, sum(p * p for p in PN)), bool)
        spec = S.Spec(roles=("free", "free"), branches=("full", "uncond"), top_k=top_k, complexity=complexity,
                      kpf=False, decode=False, return_logits=True)
        knobs = dict(weights=jnp.asarray((0.0, 0.0, 3.0), jnp.float32), gamma=jnp.float32(1.0),
                     alpha_power=jnp.float32(1.0), beta_min=jnp.float32(0.5), tau=jnp.float32(2.0),
                     top_p=jnp.float32(top_p), temperature=jnp.float32(temperature))
        return jax.jit(lambda: S.sample_joint(module, tok_module, params, tok_params, coords, (zero, zero),
                                              (no, no), jax.random.key(9), knobs, spec=spec))()

    top_p = 0.85
    B = 1024
    out = run(0.7, True, top_p, B)
    for m in (0, 1):
        draws = np.concatenate([np.asarray(t).reshape(B, -1) for t in (out["tokens"][m])], 1)
        lg = np.concatenate([np.asarray(s[m]) for s in out["logits"]], 1)  # guided, tempered
        assert rank_chi2(draws, expected_probs(lg, top_k, top_p)) > ACCEPT, f"modality {m}"
        assert rank_chi2(draws, expected_probs(lg, 0, 0.0)) < REJECT, f"modality {m}: filter skipped"

    # temperature divides every branch's logits: without Complexity Guidance the guided logits
    # of the first scale (no earlier draws) scale exactly by 1/T
    g1 = run(1.0, False, 0.0, 2)["logits"][0]
    g2 = run(2.0, False, 0.0, 2)["logits"][0]
    for m in (0, 1):
        np.testing.assert_allclose(np.asarray(g2[m]), np.asarray(g1[m]) / 2.0, rtol=1e-5, atol=1e-5)
        assert float(jnp.abs(g1[m]).max()) > 0.1
