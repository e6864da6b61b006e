"""CPU learning check (~2-3 min): a tiny EarthMapper (depth 2, width 128) trained 400 steps on
2400 synthetic 48 px pairs translates 64 held-out tiles sat->map clearly better than the
trivial baselines. Setup and baselines: earthmapper_jax/learning_check.py (fitted semantic
tokenizer, V = 16; `majority` = the most frequent training map token of each scale,
`coords_only` = the same model generating the map from the coordinates alone). The decoded
map's patch-class accuracy is the main figure: exact residual tokens are a harsh measure once a
coarse scale differs."""

import pytest

from earthmapper_jax import learning_check


@pytest.mark.slow
def test_tiny_model_learns_sat_to_map():
    r = learning_check.run()
    summary = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
               if k.startswith(("acc_", "class_acc_", "seconds"))}
    print(summary)
    assert r["class_acc_model"] >= r["class_acc_majority"] + 0.05, summary
    assert r["class_acc_model"] >= r["class_acc_coords_only"] + 0.05, summary
    assert r["acc_model"] >= r["acc_coords_only"] + 0.04, summary
    assert r["acc_model"] >= r["acc_majority"], summary
