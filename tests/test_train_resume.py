"""Checkpoints: exact resume after SIGKILL, final save on SIGTERM, NaN stop, mesh change."""

import pathlib
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from earthmapper_jax.train import checkpoints, optim, sharding, trainer
from earthmapper_jax.train import state as state_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests import toy_config as train_toy  # noqa: E402
from tests import toy_task  # noqa: E402
from tests import train_runs  # noqa: E402

TOTAL = 60
COMMON = [f"--config.total_steps={TOTAL}", "--config.log_every_steps=1",
          "--config.eval_every_steps=0", "--config.progress=False"]


# Subprocess runs use 2 simulated devices: same code path, faster start-up on 2 cores.
ENV = train_runs.sim_env(2)


def _cmd(workdir, *extra):
    return train_runs.main_cmd(ROOT / "tests" / "toy_config.py", workdir, *COMMON, *extra)


def _final_params(workdir, step=TOTAL):
    restored = train_runs.saved_state(workdir, step)
    return restored["params"], restored["opt_state"]


def _run_until(workdir, kill_at, sig, *extra):
    """Starts a run and sends `sig` once it has logged step `kill_at`."""
    return train_runs.run_until(_cmd(workdir, *extra), ENV,
                                lambda: train_runs.last_logged_step(workdir) >= kill_at, sig,
                                timeout=240)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    wd = tmp_path_factory.mktemp("full")
    train_runs.run(_cmd(wd, "--config.checkpoint.every_steps=7"), ENV, timeout=300)
    return wd


def _assert_same_run(a, b):
    ha, hb = train_runs.loss_history(a), train_runs.loss_history(b)
    assert [s for s, _ in ha] == list(range(1, TOTAL + 1))
    assert ha == hb  # bit-identical loss history (floats compared exactly)
    pa, oa = _final_params(a)
    pb, ob = _final_params(b)
    for x, y in zip(jax.tree.leaves((pa, oa)), jax.tree.leaves((pb, ob))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigkill_then_resume_is_bit_identical(uninterrupted, tmp_path):
    rc, out = _run_until(tmp_path, 23, signal.SIGKILL, "--config.checkpoint.every_steps=7")
    assert rc == -signal.SIGKILL, out
    saved = train_runs.saved_steps(tmp_path)
    assert saved and saved[-1] < TOTAL
    res = train_runs.run(_cmd(tmp_path, "--config.checkpoint.every_steps=7"), ENV, timeout=300)
    assert "resumed from" in res.stdout
    _assert_same_run(uninterrupted, tmp_path)


def test_sigterm_saves_then_resume_is_bit_identical(uninterrupted, tmp_path):
    # No periodic checkpoints: whatever exists afterwards was written by the SIGTERM handler.
    rc, out = _run_until(tmp_path, 17, signal.SIGTERM, "--config.checkpoint.every_steps=100000")
    assert rc == 0, out
    assert "preempted at step" in out, out
    stopped = int(out.split("preempted at step ")[1].split(";")[0])
    saved = train_runs.saved_steps(tmp_path)
    assert saved == [stopped] and 17 <= stopped < TOTAL
    train_runs.run(_cmd(tmp_path, "--config.checkpoint.every_steps=100000"), ENV, timeout=300)
    _assert_same_run(uninterrupted, tmp_path)


def _toy_config(**kw):
    c = train_toy.get_config()
    c.progress = False
    c.eval_every_steps = 0
    for k, v in kw.items():
        node, *rest = k.split("__")
        if rest:
            c[node][rest[0]] = v
        else:
            c[node] = v
    return c


def test_nan_loss_stops_with_step_and_saves_nothing_bad(tmp_path):
    config = _toy_config(toy_nan_at_step=13, total_steps=30, checkpoint__every_steps=5)
    with pytest.raises(trainer.NonFiniteLossError, match=r"loss became nan at step 13.*"
                       r"last good checkpoint: step 10"):
        trainer.train_and_evaluate(config, tmp_path, task=toy_task.TASK)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["10", "5"], names  # nothing at or after the bad step, no temp dirs
    params, opt = _final_params(tmp_path, 10)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves((params, opt)))


def test_restore_onto_a_different_mesh(tmp_path):
    config = _toy_config(total_steps=6, checkpoint__every_steps=6, mesh__data=8)
    trainer.train_and_evaluate(config, tmp_path, task=toy_task.TASK)
    task = toy_task.TASK
    tx, _ = optim.make_optimizer(config.optim, config.batch_size, 6, 0)
    ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
    ref = None
    for mesh_cfg in ({"data": 8}, {"data": 2, "fsdp": 4}, {"fsdp": 2, "tensor": 4}):
        mesh = sharding.make_mesh(mesh_cfg)
        target, _ = trainer.abstract_train_state(config, task, mesh, tx)
        restored, step = ckpt.restore(target)
        assert step == 6 and int(restored.step) == 6
        kernel = restored.params["fc1"]["kernel"]
        assert kernel.sharding.mesh.shape == mesh.shape
        if mesh_cfg.get("fsdp", 1) > 1:
            assert kernel.sharding.spec[0] == "fsdp"
        if mesh_cfg.get("tensor", 1) > 1:
            assert kernel.sharding.spec[1] == "tensor"
        values = jax.device_get(restored.to_dict())
        if ref is None:
            ref = values
        for x, y in zip(jax.tree.leaves(values), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(x, y)
    assert ckpt.restore_config()["task"] == "toy"
    ckpt.close()


def test_retention_keeps_latest_and_best(tmp_path):
    state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.ones(4)},
                                 opt_state=(), rng=state_lib.new_rng_data(0))
    ckpt = checkpoints.Checkpointer(tmp_path, keep=2, keep_best=1, best_metric="eval/loss")
    for step, loss in zip(range(1, 6), [5.0, 1.0, 4.0, 3.0, 2.0]):
        ckpt.save(state.replace(step=state.step + step), metrics={"eval/loss": loss})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 4, 5]
    assert ckpt.best_step() == 2
    ckpt.close()
