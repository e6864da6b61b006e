"""Multi-host for real (issue 17, point 5): two processes started with jax.distributed on
localhost, 2 simulated CPU devices each, train the toy task (tests/toy_task.py: the real tasks
cost minutes per compile here) through `python -m earthmapper_jax.main`: the train step runs
over the 4 devices of both, an eval split that does not divide between them finishes with the
count one process would use, a checkpoint written by both is restored by both, and a missing
process stops the other with one line instead of a hang. Every subprocess has a timeout.
"""

import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import ml_collections
import numpy as np
import pytest

from earthmapper_jax.errors import InputError
from earthmapper_jax.train import preflight
from earthmapper_jax.train.metrics import read_jsonl

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests import toy_config  # noqa: E402
from tests import train_runs  # noqa: E402

CONFIG = ROOT / "tests" / "toy_config.py"
# Global batch 8 (4 per process). The eval split has 15 examples: process 0 holds 8 (two
# batches of 4), process 1 holds 7 (one); one process with batch 8 also evaluates 8.
EVAL_EXAMPLES, EXPECT_EVALUATED = 15, 8
COMMON = ["--config.batch_size=8", "--config.log_every_steps=1", "--config.eval_every_steps=2",
          "--config.eval_batches=8", f"--config.toy_eval_examples={EVAL_EXAMPLES}",
          "--config.checkpoint.every_steps=2", "--config.sample_every_steps=-1",
          "--config.progress=False",
          # no dropout: its masks follow an example's place in the global batch, which the
          # hosts' interleaved shares change
          "--config.model.dropout=0.0"]
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cluster(port, process_id, *, timeout_s=60):
    return ["--config.distributed=True", f"--config.cluster.coordinator_address=localhost:{port}",
            "--config.cluster.num_processes=2", f"--config.cluster.process_id={process_id}",
            f"--config.cluster.init_timeout_s={timeout_s}"]


def _start(workdir, *extra):
    """A process of the run; its output goes to temporary files (a pipe nobody reads while
    the other process is waited for could fill and stall it)."""
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(train_runs.main_cmd(CONFIG, workdir, *COMMON, *extra), stdout=out,
                            stderr=err, text=True, cwd=ROOT, env=train_runs.sim_env(2))
    return proc, out, err


def _finish(started, timeout):
    """Waits for every process until `timeout` s from now, kills those still running; returns
    [(returncode, stdout, stderr)], returncode None for a process that was killed."""
    deadline = time.time() + timeout
    results = []
    try:
        for proc, _, _ in started:
            try:
                proc.wait(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        for proc, out, err in started:
            code = proc.poll()
            if code is None:
                proc.kill()
                proc.wait()
            out.seek(0)
            err.seek(0)
            results.append((code, out.read(), err.read()))
    return results


def _two_processes(workdir, *extra):
    """Runs processes 0 and 1 to the end; (stdout of 0, stdout of 1). Fails (after killing
    both) if either has not finished within TIMEOUT: a hang is a failure, not a wait."""
    port = _free_port()
    results = _finish([_start(workdir, *extra, *_cluster(port, i)) for i in (0, 1)], TIMEOUT)
    for code, out, err in results:
        assert code is not None, f"the two-process run did not finish within {TIMEOUT} s (hung)"
        assert code == 0, (out[-2000:], err[-3000:])
    return results[0][1], results[1][1]


def _records(workdir, key):
    return {r["step"]: r for r in read_jsonl(pathlib.Path(workdir) / "metrics.jsonl") if key in r}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same runs in one process over 4 devices: 4 steps, then resumed to 6 (the learning
    rate schedule follows total_steps, so the reference stops and resumes where the test does)."""
    wd = tmp_path_factory.mktemp("one_process")
    for total in (4, 6):
        train_runs.run(train_runs.main_cmd(CONFIG, wd, *COMMON, f"--config.total_steps={total}"),
                       train_runs.sim_env(4), timeout=TIMEOUT)
    return wd


@pytest.mark.slow
def test_two_processes_train_evaluate_checkpoint_and_resume(one_process, tmp_path):
    ref_loss, ref_eval = _records(one_process, "loss"), _records(one_process, "eval/loss")
    out0, out1 = _two_processes(tmp_path, "--config.total_steps=4")
    loss = _records(tmp_path, "loss")
    # One step over both processes' devices: each host fed its half of the global batch; the
    # losses are those of one process seeing the whole batch (up to summation order).
    assert sorted(loss) == [1, 2, 3, 4]
    np.testing.assert_allclose([loss[s]["loss"] for s in loss], [ref_loss[s]["loss"] for s in loss],
                               rtol=1e-4)
    # The uneven split: both stopped at the batch one of them lacked, as one process would.
    ev = _records(tmp_path, "eval/loss")
    assert sorted(ev) == [2, 4]
    for s in ev:
        assert ev[s]["eval/examples"] == ref_eval[s]["eval/examples"] == EXPECT_EVALUATED
        np.testing.assert_allclose(ev[s]["eval/loss"], ref_eval[s]["eval/loss"], rtol=1e-4)
    # The checkpoint holds both processes' data-iterator states.
    assert train_runs.saved_steps(tmp_path) == [2, 4]
    iters = sorted(p.name for p in (tmp_path / "checkpoints" / "4" / "data_iter").glob("*.json"))
    assert iters == ["process_0-of-2.json", "process_1-of-2.json"], iters
    # Both restore it and train on to step 6, where one process would be.
    out0, out1 = _two_processes(tmp_path, "--config.total_steps=6")
    assert f"resumed from {(tmp_path / 'checkpoints').absolute()}/4" in out0
    loss = _records(tmp_path, "loss")
    assert sorted(loss) == list(range(1, 7))
    np.testing.assert_allclose([loss[s]["loss"] for s in sorted(loss)],
                               [ref_loss[s]["loss"] for s in sorted(loss)], rtol=1e-4)
    assert train_runs.saved_steps(tmp_path)[-1] == 6


def test_a_missing_process_stops_the_other_with_one_line(tmp_path):
    start = time.time()
    [(code, out, err)] = _finish(
        [_start(tmp_path, "--config.total_steps=2", *_cluster(_free_port(), 0, timeout_s=5))], 120)
    assert code == 1, (code, out, err)
    assert time.time() - start < 90
    line = err.strip().splitlines()[-1]
    assert line.startswith("train: error: process 0 of 2 did not meet all the other processes at "
                           "localhost:"), err[-3000:]
    assert "within 5 s (config.cluster.init_timeout_s)" in line


@pytest.mark.parametrize("cluster, message", [
    (dict(num_processes=2, process_id=0), "sets num_processes, process_id but not "
                                          "config.cluster.coordinator_address"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), "expected host:port"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2),
     r"process_id=2 with num_processes=2"),
    (dict(init_timeout_s=0), r"init_timeout_s=0: expected a positive"),
])
def test_cluster_settings_are_checked_where_config_enters(cluster, message):
    config = toy_config.get_config()
    config.cluster.update(cluster)
    with pytest.raises(InputError, match=message):
        preflight.check(config)


def test_no_cluster_settings_pass():
    assert preflight.check(toy_config.get_config()) == []
    assert isinstance(toy_config.get_config().cluster, ml_collections.ConfigDict)
