"""CPU learning check (~2-3 min): a tiny EarthMapper (depth 2, width 64) trained 800 steps on
2400 synthetic 48 px pairs translates 64 held-out tiles sat->map clearly better than the
trivial baselines. Setup and baselines: benchmarks/learning_check.py (fitted semantic
tokenizer, V = 16; `majority` = the most frequent training map token of each scale,
`coords_only` = the same model generating the map from the coordinates alone). The decoded
map's patch-class accuracy is the main figure: exact residual tokens are a harsh measure once a
coarse scale differs."""

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import learning_check  # noqa: E402


@pytest.mark.slow
def test_tiny_model_learns_sat_to_map():
    r = learning_check.run()
    per_scale = {k: sum(r[f"acc_{k}_per_scale"]) / len(r[f"acc_{k}_per_scale"])
                 for k in ("model", "coords_only", "majority")}
    summary = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
               if k.startswith(("acc_", "class_acc_", "seconds"))}
    summary["mean_per_scale"] = {k: round(v, 3) for k, v in per_scale.items()}
    print(summary)
    # measured here: class 0.65 vs 0.433 coords-only / 0.267 majority; token accuracy averaged
    # over the scales 0.55 vs 0.41 / 0.44 (over all tokens 0.428 vs 0.357 / 0.412); data seeds
    # 1 and 2 keep the order (docs/earthmapper.md)
    assert r["class_acc_model"] >= max(r["class_acc_majority"], r["class_acc_coords_only"]) + 0.1, summary
    assert per_scale["model"] >= max(per_scale["majority"], per_scale["coords_only"]) + 0.05, summary
    assert r["acc_model"] >= r["acc_coords_only"] + 0.03, summary


def test_lookup_baseline_reads_the_most_frequent_map_token_per_position_and_satellite_token():
    import numpy as np
    # position 0: sat 1 -> map 2 twice, map 3 once; sat 0 never seen there -> the position's
    # majority map token (2). position 1: sat 0 -> map 1; sat 1 -> map 0.
    ts = np.array([[1, 0], [1, 1], [1, 0]])
    tm = np.array([[2, 1], [2, 0], [3, 1]])
    got = learning_check.lookup_baseline(ts, tm, np.array([[1, 0], [0, 1]]), vocab=4)
    np.testing.assert_array_equal(got, [[2, 1], [2, 0]])
