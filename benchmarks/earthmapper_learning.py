"""EarthMapper CPU learning check at the paper's 10 scales: the paper's model against its
deviations, and the sampler options, measured (the table in docs/earthmapper.md).

Per seed (data, tokenizer, init): the tiny model of benchmarks/learning_check.py (depth 2,
width 64, 2400 synthetic 64 px pairs, patch_nums 1..16 as VAR at 256², 800 steps at lr 3e-3,
fitted semantic tokenizer V = 16) is trained in three layouts, and held-out sat->map
translation (64 tiles, greedy) is scored:

    layouts   paper GJSA (within_scale "all", directed_rate 0), "group" (directed 0),
              directed 0.5 ("group" + half the rows trained as translations), and the
              baselines coordinates only (the paper model's map from coordinates alone) and
              majority (the most frequent training map token of each scale)
    samplers  on the paper model: KPF τ in {off, 0.5, 0.8, 0.9, 0.95}; Complexity Guidance
              on/off under the (2, 2, 2) nested triple; triples (2,2,2), (4,4,4), (8,8,8) under
              the nested and the independent formula (CG on, KPF off); the paper's default
              sampler (nested (2, 2, 2) + CG + KPF τ 0.95)

Prints one JSON line per (seed, row) and, at the end, the Markdown table (mean ± std over the
seeds of the patch-class accuracy and of the token accuracy averaged over scales).

    taskset -c 0 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        .venv/bin/python benchmarks/earthmapper_learning.py --seeds 0 1 2     # ~1 h on one core
    .venv/bin/python benchmarks/earthmapper_learning.py --quick               # one seed, paper layout
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import learning_check as lc  # noqa: E402

LAYOUTS = {
    "paper GJSA (all, directed 0)": dict(within_scale="all", directed_rate=0.0),
    "group (directed 0)": dict(within_scale="group", directed_rate=0.0),
    "directed 0.5 (group)": dict(within_scale="group", directed_rate=0.5),
}
PAPER = "paper GJSA (all, directed 0)"
SAMPLERS = {
    "KPF off (greedy, no guidance)": {},
    "KPF τ 0.5": dict(kpf_tau=0.5),
    "KPF τ 0.8": dict(kpf_tau=0.8),
    "KPF τ 0.9": dict(kpf_tau=0.9),
    "KPF τ 0.95": dict(kpf_tau=0.95),
    "CG off, nested (2,2,2)": dict(guidance=(2.0, 2.0, 2.0), complexity=False),
    "CG on, nested (2,2,2)": dict(guidance=(2.0, 2.0, 2.0), complexity=True),
    "nested (4,4,4)": dict(guidance=(4.0, 4.0, 4.0)),
    "nested (8,8,8)": dict(guidance=(8.0, 8.0, 8.0)),
    "independent (2,2,2)": dict(guidance=(2.0, 2.0, 2.0), guidance_form="independent"),
    "independent (4,4,4)": dict(guidance=(4.0, 4.0, 4.0), guidance_form="independent"),
    "independent (8,8,8)": dict(guidance=(8.0, 8.0, 8.0), guidance_form="independent"),
    "paper sampler: nested (2,2,2) + CG + KPF τ 0.95": dict(guidance=(2.0, 2.0, 2.0), complexity=True,
                                                            kpf_tau=0.95),
}


LOOKUP = "satellite->map token lookup (no learning)"


def _row(seed, group, name, r, key="model", secs=None):
    per_scale = r[f"acc_{key}_per_scale"]
    out = {"seed": seed, "group": group, "row": name, "class_acc": round(r[f"class_acc_{key}"], 4),
           "token_acc_mean_over_scales": round(float(np.mean(per_scale)), 4),
           "token_acc": round(r[f"acc_{key}"], 4), "per_scale": [round(v, 3) for v in per_scale]}
    if secs is not None:
        out["train_seconds"] = round(secs, 1)
    print(json.dumps(out, ensure_ascii=False), flush=True)
    return out


def table(rows):
    """Markdown: group | row | class acc mean ± std | token acc (mean over scales) mean ± std."""
    order, acc = [], {}
    for r in rows:
        k = (r["group"], r["row"])
        if k not in acc:
            order.append(k)
            acc[k] = []
        acc[k].append((r["class_acc"], r["token_acc_mean_over_scales"]))
    lines = ["| | variant | patch-class acc | token acc (mean over scales) | seeds |", "|---|---|---|---|---|"]
    for g, name in sorted(order, key=lambda k: k[0] != "layout"):  # layouts first, stable
        a = np.asarray(acc[(g, name)])
        f = lambda x: f"{x.mean():.3f} ± {x.std():.3f}"  # noqa: E731
        lines.append(f"| {g} | {name} | {f(a[:, 0])} | {f(a[:, 1])} | {len(a)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--n-train", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--geometry", default="paper", choices=sorted(lc.GEOMETRIES))
    ap.add_argument("--quick", action="store_true", help="one seed, the paper layout, no sampler sweep")
    ap.add_argument("--table-from", nargs="+", metavar="JSONL",
                    help="print the table of the JSON lines in these files (earlier runs) and stop")
    args = ap.parse_args()
    if args.table_from:
        rows = [json.loads(line) for f in args.table_from for line in open(f) if line.startswith("{")]
        print(table(rows))
        return
    seeds = args.seeds[:1] if args.quick else args.seeds
    layouts = {PAPER: LAYOUTS[PAPER]} if args.quick else LAYOUTS
    rows = []
    t_all = time.time()
    for seed in seeds:
        tok, (_, _, c_tr), (s_te, m_te, c_te), (ts, tm) = lc.prepare(n_train=args.n_train, seed=seed,
                                                                     geometry=args.geometry)
        for name, kw in layouts.items():
            model, secs, _ = lc.train(tok, ts, tm, c_tr, steps=args.steps, batch=args.batch, width=64,
                                      lr=3e-3, seed=seed, log=lambda s: print(s, file=sys.stderr, flush=True), **kw)
            r = lc.evaluate(model, s_te, m_te, c_te, tm, train_sat_tokens=ts)
            rows.append(_row(seed, "layout", name, r, secs=secs))
            if name != PAPER:
                continue
            rows.append(_row(seed, "layout", "coordinates only (paper model, no image)", r, "coords_only"))
            rows.append(_row(seed, "layout", "majority token", r, "majority"))
            rows.append(_row(seed, "layout", LOOKUP, r, "lookup"))
            if args.quick:
                continue
            for sname, skw in SAMPLERS.items():
                rows.append(_row(seed, "sampler (paper model)", sname,
                                 lc.evaluate(model, s_te, m_te, c_te, tm, baselines=False, **skw)))
    print(table(rows))
    print(f"total {time.time() - t_all:.0f} s")


if __name__ == "__main__":
    main()
