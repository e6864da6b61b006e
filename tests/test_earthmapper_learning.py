"""CPU learning checks (~3-5 min each, marked slow): a tiny EarthMapper (depth 2, width 64)
trained 800 steps on 2400 synthetic 48 px pairs, 64 held-out tiles sat->map, against the
baselines. Setup and baselines: benchmarks/learning_check.py (fitted semantic tokenizer, V = 16;
`majority` = the most frequent training map token of each scale, `coords_only` = the same model
generating the map from the coordinates alone, `lookup` = the map read off the satellite tokens
by a per-position table, without learning). The decoded
map's patch-class accuracy is the main figure: exact residual tokens are a harsh measure once a
coarse scale differs."""

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import learning_check  # noqa: E402


def _summary(r):
    per_scale = {k: sum(r[f"acc_{k}_per_scale"]) / len(r[f"acc_{k}_per_scale"])
                 for k in ("model", "coords_only", "majority", "lookup")}
    summary = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
               if k.startswith(("acc_", "class_acc_", "seconds")) and not k.endswith("per_scale")}
    summary["mean_per_scale"] = {k: round(v, 3) for k, v in per_scale.items()}
    print(summary)
    return per_scale, summary


@pytest.mark.slow
def test_best_variant_translates_better_than_reading_the_map_off_the_satellite():
    """The project's variant (directed rows 0.75, co-located condition tokens, configs/
    earthmapper_tiny.py's recipe) beats every baseline, the lookup table included. Measured
    (seed 0, docs/earthmapper.md): class 0.719 vs lookup 0.687 / coords-only 0.431 / majority
    0.267; token accuracy over all tokens 0.463 vs lookup 0.478, so the margin over lookup is
    asserted on the decoded map's classes only."""
    r = learning_check.run(directed_rate=0.75, coloc_cond=True)
    per_scale, summary = _summary(r)
    assert r["class_acc_model"] >= r["class_acc_lookup"] + 0.01, summary
    assert r["class_acc_model"] >= max(r["class_acc_majority"], r["class_acc_coords_only"]) + 0.1, summary
    assert per_scale["model"] >= max(per_scale["majority"], per_scale["coords_only"]) + 0.05, summary
    assert r["acc_model"] >= r["acc_coords_only"] + 0.05, summary


@pytest.mark.slow
def test_paper_model_learns_the_joint_map_distribution():
    """The paper's layout (GJSA "all", no directed rows) at this budget: measured (seed 0) its
    translations are no better than its maps from coordinates alone (class 0.448 vs 0.443: the
    condition is not used, docs/earthmapper.md), but what it generates is far from the majority
    token: it learnt the joint distribution of maps. Asserted: that much, with a margin."""
    r = learning_check.run(within_scale="all", directed_rate=0.0)
    _, summary = _summary(r)
    assert r["class_acc_coords_only"] >= r["class_acc_majority"] + 0.1, summary
    assert r["class_acc_model"] >= r["class_acc_majority"] + 0.1, summary


def test_lookup_baseline_reads_the_most_frequent_map_token_per_position_and_satellite_token():
    import numpy as np
    # position 0: sat 1 -> map 2 twice, map 3 once; sat 0 never seen there -> the position's
    # majority map token (2). position 1: sat 0 -> map 1; sat 1 -> map 0.
    ts = np.array([[1, 0], [1, 1], [1, 0]])
    tm = np.array([[2, 1], [2, 0], [3, 1]])
    got = learning_check.lookup_baseline(ts, tm, np.array([[1, 0], [0, 1]]), vocab=4)
    np.testing.assert_array_equal(got, [[2, 1], [2, 0]])
