"""The pix2pix reference on the synthetic city: tiny pix2pix (configs/pix2pix.py:tiny, 64 px)
trained by the project's trainer on ONE core, scored on the held-out tiles.

    taskset -c 0 .venv/bin/python benchmarks/pix2pix_reference.py --steps 1500
    (--data DIR: an `earthmapper prepare synthetic --size 64` dataset; made if missing:
     1200 pairs, 150 held out. --direction map2sat for the other model.)

One core, one thread: the process pins itself to CPU 0 (as `taskset -c 0`; --cpu N for another) and sets
XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" before JAX loads.
The budget is counted in process CPU seconds (time.process_time over the whole training run:
compilation, data pipeline, steps, export), which other jobs on the machine do not inflate;
--steps sets the run length (the learning-rate schedule is over those steps), and the printed
cpu_seconds says whether it fitted the EarthMapper recipe's 15 minutes.

Prints one JSON line: cpu/wall seconds, steps, and on the held-out tiles L1 (on the [0, 1]
scale), PSNR, SSIM and the layout gap (similarity to the own ground truth minus to the next
tile's, per tile, mean and bootstrap 95 % CI; SSIM and 8×8 block-mean correlation), each with
the paper's test-time dropout and without it. The gap is computed here by `layout_gap` below,
the same definition as the instrument (evaluation/condition.py, written in parallel; switch to
its `layout_gap` once it is merged).
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                           " intra_op_parallelism_threads=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import earthmapper_jax  # noqa: E402
from configs import pix2pix as pix2pix_config  # noqa: E402
from earthmapper_jax.cli import main as cli_main  # noqa: E402
from earthmapper_jax.evaluation import pixels  # noqa: E402
from earthmapper_jax.sampling import translate  # noqa: E402
from earthmapper_jax.train import trainer  # noqa: E402
from earthmapper_jax.train.image_data import eval_data  # noqa: E402
from earthmapper_jax.train.pix2pix_task import source_target  # noqa: E402

BOOTSTRAP = 1000


def _unit(x):
    return (np.asarray(x, np.float32) + 1.0) / 2.0


def _ssim(x, y):
    return np.asarray(pixels.ssim(jnp.asarray(_unit(x)), jnp.asarray(_unit(y))))


def _block_corr(x, y, block=8):
    def blocks(a):
        g = _unit(a).mean(-1)
        b, h, w = g.shape
        g = g.reshape(b, h // block, block, w // block, block).mean((2, 4)).reshape(b, -1)
        return g - g.mean(1, keepdims=True)
    a, b = blocks(x), blocks(y)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-12), 0.0)


def layout_gap(generated, truth, seed=0):
    """{ssim, block_corr}: {gap, ci, own, shuffled}; shuffled = tile i+1's ground truth."""
    other_truth = np.roll(np.asarray(truth), -1, axis=0)
    idx = np.random.default_rng(seed).integers(0, len(truth), (BOOTSTRAP, len(truth)))
    out = {}
    for name, f in (("ssim", _ssim), ("block_corr", _block_corr)):
        own, other = f(generated, truth), f(generated, other_truth)
        d = own - other
        lo, hi = np.quantile(d[idx].mean(1), [0.025, 0.975])
        out[name] = {"gap": round(float(d.mean()), 4), "ci": [round(float(lo), 4), round(float(hi), 4)],
                     "own": round(float(own.mean()), 4), "shuffled": round(float(other.mean()), 4)}
    return out


def heldout(config):
    xs, ys = [], []
    for batch in eval_data(config, batch_size=10):
        x, y = source_target(batch, config.model.direction)
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)


def score(model, x, y, dropout, seed=0):
    outs = [np.asarray(translate(model, x[i:i + 10], model.config.direction,
                                 jax.random.key(seed + i), dropout=dropout)[1])
            for i in range(0, len(x), 10)]
    out = np.clip(np.concatenate(outs), -1, 1)
    a, b = _unit(out), _unit(y)
    return {"l1": round(float(np.mean(np.abs(a - b))), 4),
            "psnr": round(float(np.mean(pixels.psnr(a, b))), 3),
            "ssim": round(float(np.mean(_ssim(out, y))), 4),
            "layout_gap": layout_gap(out, y)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/pix2pix_reference/syn64")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--direction", default="sat2map", choices=("sat2map", "map2sat"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu", type=int, default=0, help="the one core to run on")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})  # as `taskset -c 0`
    data = pathlib.Path(args.data)
    if not (data / "val.manifest.json").is_file():
        assert cli_main(["prepare", "synthetic", "--n", "1200", "--size", "64", "--val-fraction",
                         "0.125", "--out", str(data), "--quiet"]) == 0
    config = pix2pix_config.get_config(f"tiny,{args.direction}")
    config.data.dir = str(data)
    config.data.examples_per_epoch = None
    config.total_steps = args.steps
    config.seed = args.seed
    config.eval_every_steps = config.sample_every_steps = -1
    config.checkpoint.every_steps = 10 ** 9
    config.progress = False
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="p2p_ref_"))
    wall, cpu = time.perf_counter(), time.process_time()
    summary = trainer.train_and_evaluate(config, workdir)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    model = earthmapper_jax.load(workdir / "model")
    x, y = heldout(config)
    out = {"direction": args.direction, "steps": summary["step"], "batch": config.batch_size,
           "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1), "heldout_tiles": len(x),
           "train_l1_last": round(summary["metrics"].get("l1", float("nan")), 4),
           "test_dropout": score(model, x, y, dropout=True, seed=args.seed),
           "no_dropout": score(model, x, y, dropout=False, seed=args.seed),
           "workdir": str(workdir)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
