"""The real tasks through the real trainer's hard paths (issue 17, point 4): the tokenizer with its
GAN on and EarthMapper, at the micro shapes of tests/real_task_config.py, on a 4-device CPU mesh:
evaluation and sampling hooks firing, SIGKILL and resume bit-exact, restore on another mesh.

Each run is `python -m earthmapper_jax.main` in a subprocess with 4 simulated devices; the runs
of one task share a JAX compilation cache (the killed and the resumed run load the programs the
uninterrupted one compiled). Slow: about two minutes per run on a loaded 2-core machine.
"""

import pathlib
import shutil
import signal
import sys

import jax
import numpy as np
import pytest

from earthmapper_jax import tokenizer as tokenizer_lib
from earthmapper_jax.cli.train import load_config
from earthmapper_jax.data_prep import synthetic as syn_prep
from earthmapper_jax.io.images import read_image
from earthmapper_jax.train import checkpoints, optim, preflight, sharding, trainer
from earthmapper_jax.train.metrics import read_jsonl

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests import real_task_config  # noqa: E402
from tests import train_runs  # noqa: E402
from tests.tiny_em_model import MICRO_TOKENIZER  # noqa: E402

pytestmark = pytest.mark.slow

CONFIG = ROOT / "tests" / "real_task_config.py"
DEVICES = 4
TOTAL, EVERY_CKPT, EVERY_EVAL, EVERY_SAMPLE = 12, 4, 4, 6
# What each task logs: a train metric of its own, an eval metric, a sample metric, its export.
EXPECT = {
    "tokenizer": dict(train=("d_loss", "g_adv", "rec_l2", "codes_restarted"), eval="eval/psnr",
                      sample="sample/psnr_satellite", export="tokenizer"),
    "earthmapper": dict(train=("ce_sat", "ce_map", "acc_scale_3"), eval="eval/ce",
                        sample="sample/l1_sat2map", export="model"),
}


def test_config_matches_what_the_tests_assume():
    for name in real_task_config.ARGS:
        c = real_task_config.get_config(name)
        assert (c.total_steps, c.checkpoint.every_steps, c.eval_every_steps,
                c.sample_every_steps) == (TOTAL, EVERY_CKPT, EVERY_EVAL, EVERY_SAMPLE)
    assert real_task_config.get_config("tokenizer").loss.gan_weight > 0


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A prepared 16 px synthetic dataset (16 train / 8 val pairs) and a micro tokenizer."""
    root = tmp_path_factory.mktemp("micro")
    syn_prep.prepare(root / "data", 24, size=16, seed=0, val_fraction=1 / 3, workers=1,
                     progress=False)
    tokenizer_lib.Tokenizer.init(MICRO_TOKENIZER, jax.random.key(0)).save(root / "tok")
    return root


class Runs:
    """The command lines of one task's runs, and its uninterrupted run."""

    def __init__(self, task, micro, cache):
        self.task = task
        self.overrides = [f"--config.data.dir={micro / 'data'}"]
        if task == "earthmapper":
            self.overrides.append(f"--config.model.tokenizer_dir={micro / 'tok'}")
        self.env = train_runs.sim_env(DEVICES, cache=cache, fast_compile=True)
        self.full = None

    def cmd(self, workdir, *extra):
        return train_runs.main_cmd(f"{CONFIG}:{self.task}", workdir, *self.overrides, *extra)

    def config(self, *extra):
        """The run's config as the command line builds it (preflight filled in)."""
        config = load_config(f"{CONFIG}:{self.task}", [*self.overrides, *extra])
        preflight.check(config)
        return config


@pytest.fixture(scope="module", params=sorted(EXPECT))
def runs(request, micro, tmp_path_factory):
    r = Runs(request.param, micro, tmp_path_factory.mktemp(f"jax_cache_{request.param}"))
    r.full = tmp_path_factory.mktemp(f"full_{request.param}")
    train_runs.run(r.cmd(r.full), r.env, timeout=900)
    return r


def test_eval_and_sample_hooks_fire(runs):
    expect = EXPECT[runs.task]
    records = list(read_jsonl(runs.full / "metrics.jsonl"))
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, TOTAL + 1))
    for key in expect["train"]:
        assert all(np.isfinite(r[key]) for r in train), key
    evals = [r for r in records if expect["eval"] in r]
    assert [r["step"] for r in evals] == list(range(EVERY_EVAL, TOTAL + 1, EVERY_EVAL))
    assert all(r["eval_split"] == "val" and np.isfinite(r[expect["eval"]]) for r in evals)
    samples = [r for r in records if expect["sample"] in r]
    sample_steps = list(range(EVERY_SAMPLE, TOTAL + 1, EVERY_SAMPLE))
    assert [r["step"] for r in samples] == sample_steps
    pngs = sorted((runs.full / "samples").iterdir())
    assert [p.name for p in pngs] == [f"step_{s:07d}.png" for s in sample_steps]
    for p in pngs:  # a grid of 16 px tiles, two examples
        img = read_image(p)
        assert img.ndim == 3 and img.shape[0] >= 2 * 16 and img.std() > 0
    assert train_runs.saved_steps(runs.full) == list(range(EVERY_CKPT, TOTAL + 1, EVERY_CKPT))
    assert (runs.full / expect["export"]).is_dir()
    state = train_runs.saved_state(runs.full, TOTAL)
    if runs.task == "tokenizer":  # the GAN trains: the discriminator moved from its init
        assert set(state["params"]) == {"vae", "disc"} and "code_age" in state["extra"]
        first = train_runs.saved_state(runs.full, EVERY_CKPT)["params"]["disc"]
        moved = [not np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(first), jax.tree.leaves(state["params"]["disc"]))]
        assert all(moved)


def test_sigkill_then_resume_is_bit_identical(runs, tmp_path):
    rc, out = train_runs.run_until(
        runs.cmd(tmp_path), runs.env, lambda: EVERY_CKPT in train_runs.saved_steps(tmp_path),
        signal.SIGKILL, timeout=900)
    assert rc == -signal.SIGKILL, out
    saved = train_runs.saved_steps(tmp_path)
    assert saved and saved[-1] < TOTAL, saved
    assert train_runs.last_logged_step(tmp_path) < TOTAL
    res = train_runs.run(runs.cmd(tmp_path), runs.env, timeout=900)
    assert f"resumed from {(tmp_path / 'checkpoints').absolute()}/{saved[-1]}" in res.stdout
    # The whole loss history (the steps redone after the restore included) and every leaf of
    # the final state: params, optimizer moments, RNG, the tokenizer's code ages.
    assert train_runs.loss_history(tmp_path) == train_runs.loss_history(runs.full)
    assert (train_runs.loss_history(tmp_path, EXPECT[runs.task]["eval"])
            == train_runs.loss_history(runs.full, EXPECT[runs.task]["eval"]))
    train_runs.assert_same_state(train_runs.saved_state(tmp_path, TOTAL),
                                 train_runs.saved_state(runs.full, TOTAL))


def test_restore_onto_another_mesh(runs, tmp_path):
    # In this process (8 devices): the final checkpoint read onto an FSDP mesh of 4 and a
    # 2-device one, every value equal to what was saved from the 4-way data-parallel run.
    saved = train_runs.saved_state(runs.full, TOTAL)
    config = runs.config()
    task = trainer.get_task(config)
    tx, _ = optim.make_optimizer(config.optim, config.batch_size, TOTAL, 2)
    ckpt = checkpoints.Checkpointer(runs.full / "checkpoints")
    try:
        for mesh_cfg, n in (({"data": 2, "fsdp": 2}, 4), ({"fsdp": 2}, 2)):
            mesh = sharding.make_mesh(mesh_cfg, devices=jax.devices()[:n])
            target, _ = trainer.abstract_train_state(config, task, mesh, tx)
            restored, step = ckpt.restore(target)
            assert step == TOTAL
            specs = [x.sharding.spec for x in jax.tree.leaves(restored.params)]
            assert any("fsdp" in str(s) for s in specs), specs
            train_runs.assert_same_state(jax.device_get(restored.to_dict()), saved)
    finally:
        ckpt.close()
    # Through the trainer: a copy of the run resumed on a 2x2 (data, fsdp) mesh trains on.
    shutil.copytree(runs.full / "checkpoints", tmp_path / "checkpoints")
    shutil.copy(runs.full / "metrics.jsonl", tmp_path / "metrics.jsonl")
    more = TOTAL + 2
    res = train_runs.run(runs.cmd(tmp_path, f"--config.total_steps={more}", "--config.mesh.data=2",
                                  "--config.mesh.fsdp=2", "--config.eval_every_steps=-1",
                                  "--config.sample_every_steps=-1"), runs.env, timeout=900)
    assert f"/checkpoints/{TOTAL}" in res.stdout
    assert sorted(dict(train_runs.loss_history(tmp_path))) == list(range(1, more + 1))
    # It went on from the restored weights, not from a fresh init: two more steps moved the
    # params little next to the twelve the first run took from the init.
    init = jax.device_get(trainer._unbox(task.init_params(
        config, jax.random.fold_in(jax.random.key(config.seed), 1))))
    after = train_runs.saved_state(tmp_path, more)["params"]
    moved, from_init = _distance(after, saved["params"]), _distance(init, saved["params"])
    assert 0 < moved < 0.5 * from_init, (moved, from_init)


def _distance(a, b) -> float:
    return float(np.sqrt(sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
                             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))))
