"""CPU learning check: a tiny EarthMapper trained for ~1-2 minutes on synthetic pairs translates
held-out tiles sat->map clearly better than the trivial baselines (learning_check module doc:
fitted semantic tokenizer, baselines `majority` = most frequent map token per scale and
`coords_only` = the same model generating the map from the coordinates alone)."""

import pytest

from earthmapper_jax import learning_check


@pytest.mark.slow
def test_tiny_model_learns_sat_to_map():
    r = learning_check.run(n_train=1600, n_test=64, steps=300)
    summary = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
               if k.startswith(("acc_", "class_acc_", "seconds"))}
    print(summary)
    assert r["acc_model"] > 1.15 * r["acc_majority"], summary
    assert r["acc_model"] > r["acc_coords_only"] + 0.05, summary
    assert r["class_acc_model"] > r["class_acc_majority"] + 0.05, summary
