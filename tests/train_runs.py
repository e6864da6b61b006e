"""Training runs in subprocesses, for the tests that kill, resume and compare them
(tests/test_train_resume.py on the toy task, tests/test_trainer_real_tasks.py on the real ones,
tests/test_multihost.py on two processes).

    main_cmd(config, workdir, *overrides)   `python -m earthmapper_jax.main` for a config file
    sim_env(devices, cache=None)            env with `devices` simulated CPU devices (and a JAX
                                            compilation cache shared by runs of one test)
    run_until(cmd, env, ready, sig)         starts a run, sends `sig` once ready() is true
    last_logged_step, saved_steps, loss_history, saved_state   what a workdir holds
    assert_same_state(a, b)                 exact equality of two restored states
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from earthmapper_jax.train.metrics import read_jsonl
from tests.tiny_em_model import FAST_COMPILE

ROOT = pathlib.Path(__file__).resolve().parents[1]
# FAST_COMPILE: XLA's unoptimised CPU compile: the real tasks' steps compile several times
# faster and the numerics stay deterministic run to run.


def main_cmd(config, workdir, *overrides) -> list[str]:
    return [sys.executable, "-m", "earthmapper_jax.main", "--config", str(config),
            "--workdir", str(workdir), *overrides]


def sim_env(devices: int, cache=None, fast_compile: bool = False) -> dict:
    """Environment of a subprocess run on `devices` simulated CPU devices. `cache`: a folder
    for JAX's persistent compilation cache, so that the second and third run of a test
    (uninterrupted, killed, resumed) load the programs the first compiled."""
    flags = f"--xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, XLA_FLAGS=f"{flags} {FAST_COMPILE}" if fast_compile else flags,
               JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    return env


def last_logged_step(workdir) -> int:
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return 0
    return max((r["step"] for r in read_jsonl(path)), default=0)


def saved_steps(workdir) -> list[int]:
    """Steps of the complete checkpoints (Orbax renames a step's folder when it is done)."""
    ckpts = pathlib.Path(workdir) / "checkpoints"
    if not ckpts.is_dir():
        return []
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())


def loss_history(workdir, key="loss") -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in read_jsonl(pathlib.Path(workdir) / "metrics.jsonl")
            if key in r]


def saved_state(workdir, step) -> dict:
    """The TrainState dict of checkpoint `step`, restored as host arrays."""
    return ocp.StandardCheckpointer().restore(
        pathlib.Path(workdir).absolute() / "checkpoints" / str(step) / "state")


def assert_same_state(a: dict, b: dict) -> None:
    """Every leaf (step, params, optimizer state, RNG, extra) bit-identical."""
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for (path, x), y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                      err_msg=jax.tree_util.keystr(path))


def run_until(cmd, env, ready, sig, *, timeout=600, cwd=ROOT):
    """Starts `cmd`, polls `ready()` every 5 ms and sends `sig` once it is true. Returns
    (returncode, output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd, env=env)
    deadline = time.time() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"run ended before it was ready:\n{proc.stdout.read()[-3000:]}")
            assert time.time() < deadline, f"not ready after {timeout} s"
            time.sleep(0.005)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


def run(cmd, env, *, timeout=600, cwd=ROOT) -> subprocess.CompletedProcess:
    """Runs `cmd` to the end; fails the test with its output's tail if it fails."""
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    return res
