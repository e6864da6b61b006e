"""EarthMapper CPU learning check at benchmark size: layouts and sampler options compared.

Trains the tiny model of benchmarks/learning_check.py (depth 2, width 64, 2400 synthetic
48 px pairs, 800 steps at lr 3e-3, fitted semantic tokenizer V = 16) for each layout and scores held-out
sat->map translation (greedy) under several sampler settings. Prints one JSON line per run.

    .venv/bin/python benchmarks/earthmapper_learning.py            # ~8 min on 2 CPU cores
    .venv/bin/python benchmarks/earthmapper_learning.py --quick    # the default layout only
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
    "directed_group (default)": dict(within_scale="group", directed_rate=0.5),
    "paper_joint_group": dict(within_scale="group", directed_rate=0.0),
    "paper_joint_all": dict(within_scale="all", directed_rate=0.0),
}
SAMPLERS = {
    "greedy": {},
    "kpf_tau0.5": dict(kpf_tau=0.5),
    "kpf_tau0.8": dict(kpf_tau=0.8),
    "kpf_tau0.9": dict(kpf_tau=0.9),
    "kpf_tau0.95": dict(kpf_tau=0.95),
    "cfg_cond2": dict(guidance=(0.0, 2.0, 0.0), complexity=False),
    "cfg_222_cg": dict(guidance=(2.0, 2.0, 2.0), complexity=True),
}
KEYS = ("acc_model", "class_acc_model", "acc_coords_only", "class_acc_coords_only", "acc_majority",
        "class_acc_majority")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    layouts = dict(list(LAYOUTS.items())[:1]) if args.quick else LAYOUTS
    sat, mp, coords, labels = lc.make_data(2400 + 64)
    tr, te = slice(0, 2400), slice(2400, 2464)
    tok = lc.fit_tokenizer(sat[tr], mp[tr], labels[tr], vocab=16)
    ts, tm = lc.tokens_of(tok, sat[tr]), lc.tokens_of(tok, mp[tr])
    for name, kw in layouts.items():
        model, secs, _ = lc.train(tok, ts, tm, coords[tr], steps=800, width=64, lr=3e-3, **kw)
        samplers = SAMPLERS if kw["directed_rate"] else {"greedy": {}}
        for sname, skw in samplers.items():
            t0 = time.time()
            r = lc.evaluate(model, sat[te], mp[te], coords[te], tm, **skw)
            out = {"layout": name, "sampler": sname, "train_seconds": round(secs, 1),
                   "eval_seconds": round(time.time() - t0, 1)}
            out.update({k: round(float(r[k]), 3) for k in KEYS})
            out["acc_model_per_scale"] = [round(v, 3) for v in r["acc_model_per_scale"]]
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
