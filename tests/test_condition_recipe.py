"""The small-budget recipe (configs/earthmapper_tiny.py:tiny: peak LR 1e-3 at batch 8,
co-located conditioning, directed_rate 0.75) makes a tiny EarthMapper use its condition: the
teacher-forced conditioning gain (evaluation/condition.py) has its 95 % CI above 0 at every
scale >= 1 in both directions on held-out tiles.

To fit the suite's budget the model is the CPU learning check's (benchmarks/learning_check.py:
depth 2, width 64, synthetic 48 px pairs, the fitted semantic tokenizer with V = 16, which takes
seconds where a VQ-VAE takes many minutes); the decoded-image figures (layout gap, modality
share) of the recipe with the real tiny tokenizer are the sweep's and the demo's
(benchmarks/condition_sweep.py, docs/earthmapper.md).

Measured (benchmarks/condition_sweep.py --proxy, the same data, seed, sizes and steps, on one
pinned core): 151 CPU s of training; gain over all target tokens +0.378 sat→map, +0.397 map→sat
nats/token; lower CI bounds at scales 1..4 ≥ 0.17 (sat→map 0.674, 0.409, 0.172, 0.304;
map→sat 0.584, 0.371, 0.214, 0.345)."""

import pathlib
import sys

import numpy as np
import pytest

from configs import earthmapper_tiny
from earthmapper_jax.evaluation import condition
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.var_mode import tokenizer_parts

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import learning_check as lc  # noqa: E402

N_TRAIN, N_TEST = 1200, 64


def _recipe_report(steps, seed=0):
    sat, mp, coords, labels = lc.make_data(N_TRAIN + N_TEST, seed=seed)
    tr, te = slice(0, N_TRAIN), slice(N_TRAIN, None)
    tok = lc.fit_tokenizer(sat[tr], mp[tr], labels[tr], vocab=16, seed=seed)
    ts, tm = lc.tokens_of(tok, sat[tr]), lc.tokens_of(tok, mp[tr])
    model, _, _ = lc.train(tok, ts, tm, coords[tr], steps=steps, seed=seed, width=64,
                           lr=earthmapper_tiny.RECIPE_PEAK_LR,
                           directed_rate=earthmapper_tiny.RECIPE_DIRECTED_RATE,
                           coloc_cond=earthmapper_tiny.RECIPE_COLOC)
    tok_module, tok_params = tokenizer_parts(tok)
    fn = condition.earthmapper_logits_fn(em.build(model.config), model.params, tok_module, tok_params)
    nll = condition.teacher_forced(fn, coords[te], lc.tokens_of(tok, sat[te]), lc.tokens_of(tok, mp[te]))
    return condition.condition_report(nll, lc.PATCH_NUMS)


@pytest.mark.slow
def test_recipe_uses_the_condition_at_every_scale_both_ways():
    rep = _recipe_report(steps=400)
    summary = {d: ([round(g, 4) for g in r["gain"]], [round(lo, 4) for lo, _ in r["gain_ci"]])
               for d, r in rep.items()}
    print(summary)
    ok, fails = condition.meets_target(rep)
    assert ok, (fails, summary)
    for r in rep.values():
        assert np.mean(r["gain"][1:]) > 0
