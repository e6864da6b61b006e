"""Evaluation cost per 1,000 images: Inception features, LPIPS, SSIM/PSNR/RMSE, and the host-side
FID / KID / precision-recall on one split's features.

    .venv/bin/python benchmarks/eval_cost.py [--size 256] [--batch 16] [--batches 3] [--n 1098]

Random weights in the real layouts (the cost does not depend on the values). Each network is
compiled and run once on a warm-up batch, then timed over --batches batches; the figure is
extrapolated to 1,000 images (LPIPS: 1,000 pairs). Wall time and process CPU time are both
printed, because on a shared machine the wall clock also counts other jobs; CPU seconds / cores
is the figure for an idle machine. The host metrics use --n images per set (the paper's New York
test split has 1,098) with 2048-d features and torch-fidelity's defaults (KID: 100 subsets of
1,000; precision/recall k = 3).
"""

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.evaluation import distributions, inception, inception_weights, pixels
from earthmapper_jax.tokenizer import lpips


def _random_inception(rng):
    sd = {}
    for key, shape in inception_weights.checkpoint_shapes().items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
            sd[key] = np.ones(shape, np.float32)
        elif len(shape) == 4:
            sd[key] = (rng.standard_normal(shape, np.float32) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
        else:
            sd[key] = np.zeros(shape, np.float32)
    return jax.tree.map(jnp.asarray, inception_weights.convert_state_dict(sd))


def _random_lpips(rng, net):
    b = lpips.BACKBONES[net]
    backbone, cin = {}, 3
    for layers in b["stages"]:
        for i in layers:
            width, k = b["convs"][i][:2]
            backbone[f"features.{i}.weight"] = (rng.standard_normal((width, cin, k, k), np.float32)
                                                 * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
            backbone[f"features.{i}.bias"] = np.zeros(width, np.float32)
            cin = width
    lin = {f"lin{k}.model.1.weight": rng.uniform(0, 1, (1, w, 1, 1)).astype(np.float32)
           for k, w in enumerate(lpips.stage_widths(net))}
    return jax.tree.map(jnp.asarray, lpips.convert_lpips_state_dicts(backbone, lin, net))


def _time(fn, args, batches, batch):
    jax.block_until_ready(fn(*args))  # compile + warm up
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        jax.block_until_ready(fn(*args))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    per = 1000.0 / (batches * batch)
    return {"wall_s_per_1000": wall * per, "cpu_s_per_1000": cpu * per}


def _time_host(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--n", type=int, default=1098, help="images per set for FID/KID/PR")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (args.batch, args.size, args.size, 3)).astype(np.float32))
    y = jnp.clip(x + 0.05 * jnp.asarray(rng.standard_normal(x.shape).astype(np.float32)), 0, 1)
    hi = jax.lax.Precision.HIGHEST
    results = {"device": jax.devices()[0].device_kind, "platform": platform.platform(),
               "cores": os.cpu_count(), "size": args.size, "batch": args.batch}
    params = _random_inception(rng)
    results["inception_features"] = _time(inception.inception_features, (params, x), args.batches, args.batch)
    for net in ("alex", "vgg"):
        p = _random_lpips(rng, net)
        fn = jax.jit(lambda p, a, b, net=net: lpips.lpips_distance(p, 2 * a - 1, 2 * b - 1, net=net, precision=hi))
        results[f"lpips_{net}"] = _time(fn, (p, x, y), args.batches, args.batch)
    pix = jax.jit(lambda a, b: (pixels.ssim(a, b), pixels.psnr(a, b), pixels.rmse(a, b)))
    results["ssim_psnr_rmse"] = _time(pix, (x, y), args.batches, args.batch)

    real = np.maximum(rng.standard_normal((args.n, inception.FEATURE_DIM)), 0)
    fake = np.maximum(rng.standard_normal((args.n, inception.FEATURE_DIM)) + 0.1, 0)

    def fid():
        stats = []
        for f in (fake, real):
            s = distributions.FeatureStats(f.shape[1])
            for chunk in np.array_split(f, max(1, len(f) // 64)):
                s.update(chunk)
            stats += list(s.mean_cov())
        distributions.frechet_distance(*stats)

    results[f"fid_{args.n}"] = _time_host(fid)
    results[f"kid_{args.n}"] = _time_host(lambda: distributions.kid(fake, real, min(1000, args.n)))
    results[f"precision_recall_{args.n}"] = _time_host(lambda: distributions.precision_recall(fake, real))
    for k, v in results.items():
        if isinstance(v, dict):
            print(f"{k:24s} " + "  ".join(f"{m} {s:8.2f}" for m, s in v.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
