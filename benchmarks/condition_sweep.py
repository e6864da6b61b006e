"""The condition-use sweep of issue 15: which small-budget recipe makes the tiny EarthMapper
translate *its* source (docs/earthmapper.md, "Condition use at small budgets").

    python benchmarks/condition_sweep.py --data D --tokenizer T --tokens K --out OUT \
        [--variants base,lr1e3,...] [--seeds 0,1] [--steps 600]

D: `earthmapper prepare synthetic --size 64` (train and val splits), T: a tiny tokenizer
directory trained on D, K: `earthmapper prepare tokens T D K`. Each (variant, seed) trains in
its own process pinned to CPU 0 with XLA single-threaded (`taskset -c 0`, the budget measure is
that process's CPU seconds, not wall time: the machine is shared), then measures on the val
tiles (evaluation/condition.evaluate_translation): teacher-forced conditioning gain per
direction and scale with CIs, layout gaps, right-modality shares. OUT/<variant>_s<seed>.json
per run, OUT/table.md the summary (mean ± half the spread over seeds).

--proxy: the cheap pruning runs (what the machine allowed on 2 shared cores): the CPU learning
check's setup (benchmarks/learning_check.py: 48 px synthetic pairs, the fitted semantic
tokenizer V = 16, depth 2 width 64, batch 32), one process pinned to CPU 0, data and tokenizer
once, then per (lever set, seed) a training of --steps steps and the teacher-forced figures on
64 held-out tiles (PROXY below; no decoded images: that tokenizer does not decode to RGB).
    taskset -c 0 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        python benchmarks/condition_sweep.py --proxy --out OUT --seeds 0,1 --steps 400

Variants are config overrides of configs/earthmapper_tiny.py:paper_tiny (the paper-shaped tiny recipe)
(VARIANTS below); "recipe" is configs/earthmapper_tiny.py as it stands.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import learning_check as lc  # noqa: E402
from earthmapper_jax.cli.train import load_config  # noqa: E402
from earthmapper_jax.data import token_records as token_data  # noqa: E402
from earthmapper_jax.data.pipeline import pipeline  # noqa: E402
from earthmapper_jax.evaluation import condition  # noqa: E402
from earthmapper_jax.models import earthmapper as em  # noqa: E402
from earthmapper_jax.models.loading import load  # noqa: E402
from earthmapper_jax.models.var_mode import tokenizer_parts  # noqa: E402
from earthmapper_jax.train.trainer import train_and_evaluate  # noqa: E402

PEAK_1E3 = 1e-3 * 256 / 8  # base_lr whose peak is 1e-3 at batch 8 (VAR's base_lr·B/256 rule)
VARIANTS = {
    # name: (config file:arg, overrides)
    "base": ("earthmapper_tiny.py:paper_tiny", {}),
    "lr1e3": ("earthmapper_tiny.py:paper_tiny", {"optim.base_lr": PEAK_1E3}),
    "lr1e3_dir1": ("earthmapper_tiny.py:paper_tiny", {"optim.base_lr": PEAK_1E3, "model.directed_rate": 1.0}),
    "coloc": ("earthmapper_tiny.py:paper_tiny", {"optim.base_lr": PEAK_1E3, "model.coloc_cond": True}),
    "coloc_dir1": ("earthmapper_tiny.py:paper_tiny", {"optim.base_lr": PEAK_1E3, "model.directed_rate": 1.0,
                                                 "model.coloc_cond": True}),
    "recipe": ("earthmapper_tiny.py:tiny", {}),
}
PROXY = {
    # name: learning_check.train keywords (the levers at the proxy's batch 32)
    "paper_rule": dict(lr=3e-3 * 8 / 256, directed_rate=0.5),  # the paper-shaped tiny peak, 9.4e-5
    "lr1e3": dict(lr=1e-3, directed_rate=0.5),
    "lr1e3_dir075": dict(lr=1e-3, directed_rate=0.75),
    "recipe": dict(lr=1e-3, directed_rate=0.75, coloc_cond=True),
}
XLA_ONE_CORE = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _arrays(data_dir, tokens_dir, split="val"):
    imgs = list(pipeline(data_dir, split, 64, num_epochs=1, shuffle=False))
    cat = lambda key, xs: np.concatenate([b[key] for b in xs])  # noqa: E731
    toks = list(token_data.token_pipeline(tokens_dir, "train", 64, seed=0, augment=False,
                                          num_epochs=1, shuffle=False))
    return (cat("sat_image", imgs), cat("map_image", imgs), cat("coords", imgs),
            {"sat": cat("sat_tokens", toks), "map": cat("map_tokens", toks)})


def run_one(args) -> dict:
    """Trains one (variant, seed) in this process and measures it (the child side)."""
    file, overrides = VARIANTS[args.one]
    fields = {"data.tokens_dir": args.tokens, "model.tokenizer_dir": args.tokenizer,
              "data.image_size": 64, "total_steps": args.steps, "seed": args.seed,
              "eval_every_steps": -1, "sample_every_steps": 0, "checkpoint.every_steps": 10 ** 6,
              "log_every_steps": 50, **overrides}
    cfg = load_config(f"{ROOT / 'configs' / file}", [f"--config.{k}={v}" for k, v in fields.items()])
    work = pathlib.Path(args.out) / f"{args.one}_s{args.seed}"
    t0, c0 = time.time(), time.process_time()
    train_and_evaluate(cfg, work)
    cpu_train, wall_train = time.process_time() - c0, time.time() - t0
    sat, mp, coords, train_tokens = _arrays(args.data, args.tokens)
    model = load(work / "model")
    res = condition.evaluate_translation(model, sat, mp, coords, train_tokens=train_tokens,
                                         rng=jax.random.key(args.seed))
    res.update(variant=args.one, seed=args.seed, steps=args.steps, cpu_seconds_train=cpu_train,
               wall_seconds_train=wall_train, overrides={k: str(v) for k, v in overrides.items()},
               config=file)
    return res


def run_proxy(args) -> None:
    """The --proxy sweep (module doc): one JSON per (variant, seed) in OUT, table printed."""
    out = pathlib.Path(args.out)
    for seed in [int(x) for x in args.seeds.split(",")]:
        sat, mp, coords, labels = lc.make_data(1200 + 64, seed=seed)
        tr, te = slice(0, 1200), slice(1200, None)
        tok = lc.fit_tokenizer(sat[tr], mp[tr], labels[tr], vocab=16, seed=seed)
        ts, tm = lc.tokens_of(tok, sat[tr]), lc.tokens_of(tok, mp[tr])
        es, et = lc.tokens_of(tok, sat[te]), lc.tokens_of(tok, mp[te])
        tok_module, tok_params = tokenizer_parts(tok)
        for v in args.variants.split(","):
            f = out / f"proxy_{v}_s{seed}.json"
            if f.exists():
                continue
            c0 = time.process_time()
            model, _, _ = lc.train(tok, ts, tm, coords[tr], steps=args.steps, seed=seed, width=64, **PROXY[v])
            cpu = time.process_time() - c0
            fn = condition.earthmapper_logits_fn(em.build(model.config), model.params, tok_module, tok_params)
            rep = condition.condition_report(condition.teacher_forced(fn, coords[te], es, et), lc.PATCH_NUMS,
                                             {"sat": ts, "map": tm}, {"sat": es, "map": et}, 16)
            res = dict(variant=v, seed=seed, steps=args.steps, cpu_seconds_train=cpu, teacher_forced=rep,
                       target=list(condition.meets_target(rep)), levers=PROXY[v])
            f.write_text(json.dumps(res, indent=1))
            print(f"[proxy] {v} seed {seed}: {cpu:.0f} CPU s; " + "; ".join(
                f"{d} gain {r['gain_all']:+.4f} lo {[round(lo, 3) for lo, _ in r['gain_ci']]}"
                for d, r in rep.items()), flush=True)
    print(proxy_table(out))


def proxy_table(out) -> str:
    by = {}
    for f in sorted(pathlib.Path(out).glob("proxy_*_s*.json")):
        r = json.loads(f.read_text())
        by.setdefault(r["variant"], []).append(r)
    lines = ["| levers (proxy) | seeds | steps | CPU s | gain sat→map (all) | scales with CI > 0 | "
             "gain map→sat (all) | scales with CI > 0 | CE map real / none / unigram | target met |",
             "|" + "---|" * 10]
    for v in [v for v in PROXY if v in by]:
        runs = by[v]
        cells = [v, str(len(runs)), str(runs[0]["steps"]),
                 f"{np.mean([r['cpu_seconds_train'] for r in runs]):.0f}"]
        for d in ("sat2map", "map2sat"):
            g = np.array([r["teacher_forced"][d]["gain_all"] for r in runs])
            cells.append(f"{g.mean():+.4f}" + (f" ± {(g.max() - g.min()) / 2:.4f}" if len(g) > 1 else ""))
            K = len(runs[0]["teacher_forced"][d]["gain"])
            cells.append(" / ".join(f"{sum(lo > 0 for lo, _ in r['teacher_forced'][d]['gain_ci'][1:])}"
                                    f"/{K - 1}" for r in runs))
        t = runs[0]["teacher_forced"]["sat2map"]
        cells.append(f"{np.mean(t['ce_real']):.3f} / {np.mean(t['ce_none']):.3f} / {np.mean(t['ce_unigram']):.3f}")
        cells.append(f"{sum(r['target'][0] for r in runs)}/{len(runs)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _row(runs) -> str:
    def ms(vals, fmt="{:+.4f}"):
        v = np.asarray(vals, float)
        return fmt.format(v.mean()) + (f" ± {(v.max() - v.min()) / 2:.4f}" if len(v) > 1 else "")

    cells = [runs[0]["variant"], str(len(runs)), f"{np.mean([r['cpu_seconds_train'] for r in runs]):.0f}"]
    for d in ("sat2map", "map2sat"):
        tf = [r["teacher_forced"][d] for r in runs]
        cells.append(ms([t["gain_all"] for t in tf]))
        K = len(tf[0]["gain"])
        lo_pos = [sum(t["gain_ci"][k][0] > 0 for t in tf) for k in range(1, K)]
        cells.append(" ".join(f"{ms([t['gain'][k] for t in tf], '{:+.3f}')}{'*' * lo_pos[k - 1]}"
                              for k in range(1, K)))
    for d in ("sat2map", "map2sat"):
        cells.append(ms([r[d]["layout_gap"]["ssim"]["gap"] for r in runs]))
        cells.append(f"{sum(r[d]['layout_gap']['ssim']['ci'][0] > 0 for r in runs)}/{len(runs)}")
    cells.append(ms([r["sat2map"]["layout_gap"]["block_corr"]["gap"] for r in runs], "{:+.3f}"))
    for d in ("map2sat", "sat2map"):
        cells.append(ms([100 * r[d]["right_modality"] for r in runs], "{:.0f} %"))
    cells.append(f"{sum(r['target'][0] for r in runs)}/{len(runs)}")
    return "| " + " | ".join(cells) + " |"


HEADER = ("| variant | seeds | CPU s | gain sat→map (all) | by scale 1..K-1 (* = CI > 0, per seed) "
          "| gain map→sat (all) | by scale | SSIM gap sat→map | CI > 0 | SSIM gap map→sat | CI > 0 "
          "| block-corr gap sat→map | sat share (map→sat) | map share (sat→map) | TF target met |\n"
          "|" + "---|" * 15)


def table(out) -> str:
    by = {}
    for f in sorted(pathlib.Path(out).glob("*_s*.json")):
        r = json.loads(f.read_text())
        by.setdefault(r["variant"], []).append(r)
    order = [v for v in VARIANTS if v in by]
    return "\n".join([HEADER] + [_row(by[v]) for v in order])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data")
    p.add_argument("--tokenizer")
    p.add_argument("--tokens")
    p.add_argument("--proxy", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.proxy:
        if args.variants == ",".join(VARIANTS):
            args.variants = ",".join(PROXY)
        run_proxy(args)
        return 0
    if args.one:
        res = run_one(args)
        (out / f"{args.one}_s{args.seed}.json").write_text(json.dumps(res, indent=1))
        return 0
    env = dict(os.environ, XLA_FLAGS=XLA_ONE_CORE, PYTHONPATH=str(ROOT))
    for v in args.variants.split(","):
        for s in args.seeds.split(","):
            if (out / f"{v}_s{s}.json").exists():
                continue
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cmd = ["taskset", "-c", "0", sys.executable, __file__, "--data", args.data, "--tokenizer",
                   args.tokenizer, "--tokens", args.tokens, "--out", args.out, "--steps",
                   str(args.steps), "--one", v, "--seed", s]
            rc = subprocess.run(cmd, env=env).returncode
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            print(f"[sweep] {v} seed {s}: rc {rc}, process CPU {after.ru_utime - before.ru_utime:.0f} s",
                  flush=True)
    print(table(out))
    (out / "table.md").write_text(table(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
