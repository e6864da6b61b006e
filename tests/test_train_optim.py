"""VAR's optimiser recipe, metrics files, plotting and the `earthmapper train` command line."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from earthmapper_jax.train import defaults, metrics, optim


def _optim(**kw):
    c = defaults.add_training_fields(ml_collections.ConfigDict()).optim
    for k, v in kw.items():
        c[k] = v
    return c


def test_lr_schedule_is_vars_lin0():
    c = _optim(base_lr=1e-4, final_lr_frac=0.1)
    lr = optim.lr_schedule(c, global_batch=768, total_steps=1001, warmup_steps=100)
    peak = 1e-4 * 768 / 256  # 3e-4, VAR-d16's
    assert float(lr(0)) == pytest.approx(0.005 * peak)
    assert float(lr(50)) == pytest.approx(peak * (0.005 + 0.995 * 0.5))
    assert float(lr(100)) == pytest.approx(peak)
    assert float(lr(100 + 45)) == pytest.approx(peak)  # flat for 5 % after the warm-up
    assert float(lr(1000)) == pytest.approx(0.1 * peak)  # ends at the final fraction
    mid = 100 + 450  # pasd = 0.5 -> wpe + (1 - wpe) * 0.5 / 0.95
    assert float(lr(mid)) == pytest.approx(peak * (0.1 + 0.9 * 0.5 / 0.95), rel=1e-5)
    vals = [float(lr(s)) for s in range(150, 1001, 50)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_no_decay_list_and_adamw_update():
    params = {"blocks": {"attn": {"mat_qkv": {"kernel": jnp.ones((4, 12))},
                                  "scale_mul": jnp.ones((1, 2, 1, 1)),
                                  "q_bias": jnp.ones(4)}},
              "lvl_embed": {"embedding": jnp.ones((3, 4))},
              "pos_1LC": jnp.ones((5, 4)), "class_emb": {"embedding": jnp.ones((3, 4))},
              "geo": {"null": jnp.ones(4), "mlp_out": {"kernel": jnp.ones((4, 4))}},
              "head": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones(8)}}
    mask = optim.decay_mask(params)
    flat = {optim.path_name(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat == {
        "blocks/attn/mat_qkv/kernel": True, "blocks/attn/scale_mul": False,
        "blocks/attn/q_bias": False, "lvl_embed/embedding": False, "pos_1LC": False,
        "class_emb/embedding": True,  # VAR decays its class table
        "geo/null": False, "geo/mlp_out/kernel": True, "head/kernel": True, "head/bias": False}
    # Zero gradients: the only change is decoupled weight decay lr*wd*p on decayed params.
    c = _optim(base_lr=256.0, weight_decay=0.05, clip_norm=2.0)  # peak lr = 1 at batch 1
    tx, lr = optim.make_optimizer(c, global_batch=1, total_steps=10, warmup_steps=0)
    zeros = jax.tree.map(jnp.zeros_like, params)
    upd, _ = tx.update(zeros, tx.init(params), params)
    assert float(upd["head"]["kernel"][0, 0]) == pytest.approx(-0.05)
    assert float(upd["head"]["bias"][0]) == 0.0 and float(upd["pos_1LC"][0, 0]) == 0.0


def test_global_norm_clip_at_two():
    c = _optim(base_lr=256.0, weight_decay=0.0, b1=0.0, b2=0.0, eps=0.0)
    tx, _ = optim.make_optimizer(c, global_batch=1, total_steps=10, warmup_steps=0)
    p = {"w": jnp.zeros(4)}
    g = {"w": jnp.array([30.0, 40.0, 0.0, 0.0])}  # norm 50 -> clipped to 2
    upd, _ = tx.update(g, tx.init(p), p)
    # Adam with b1 = b2 = 0 normalises each coordinate: the sign survives, magnitude lr.
    np.testing.assert_allclose(np.asarray(upd["w"])[:2], [-1.0, -1.0], rtol=1e-5)
    clip = optim.optax.clip_by_global_norm(2.0)
    cg, _ = clip.update(g, clip.init(p))
    assert float(jnp.linalg.norm(cg["w"])) == pytest.approx(2.0)


def test_jsonl_truncate_and_plot(tmp_path):
    w = metrics.JsonlWriter(tmp_path / "metrics.jsonl", enabled=True)
    for s in range(1, 6):
        w.write(s, {"loss": 1.0 / s, "lr": 1e-3, "eval/loss": 2.0 / s})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss"')  # cut short by a kill
    w.truncate_after(3)
    assert [r["step"] for r in metrics.read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    from earthmapper_jax.cli import main

    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 1000


def test_cli_train_parses_config_overrides(tmp_path, capsys):
    from earthmapper_jax.cli import main
    from earthmapper_jax.cli.train import load_config

    c = load_config("tests/toy_config.py", ["--config.mesh.fsdp=2", "--config.data.dir=/x",
                                             "--config.optim.base_lr", "0.5"])
    assert c.mesh.fsdp == 2 and c.data.dir == "/x" and c.optim.base_lr == 0.5
    assert main(["train", "--config", "tests/toy_config.py", "--workdir", str(tmp_path),
                 "--config.nope=1"]) == 1
    assert "no field 'nope'" in capsys.readouterr().err
    assert main(["train", "--config", "tests/toy_config.py", "--workdir", str(tmp_path),
                 "--config.total_steps=4", "--config.progress=False",
                 "--config.eval_every_steps=0"]) == 0
    recs = metrics.read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3, 4]
    assert {"grad_norm", "lr", "perf/images_per_s", "accuracy"} <= set(recs[0])
    saved = json.loads((tmp_path / "checkpoints" / "4" / "config" / "metadata").read_text())
    assert saved["total_steps"] == 4 and saved["task"] == "toy"
