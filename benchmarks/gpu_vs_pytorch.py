"""Issue 6: EarthMapper-JAX against the official PyTorch VAR, on the same card, in one run.

(Over 400 lines: the orchestrator, its GPU/CPU presets and the tables they print change
together; splitting the tables out is left to a later clean-up.)

One command runs both sides one after the other (never at once: each side gets the whole card)
and prints one markdown table; everything is also written to --out (results.json, table.md).

    # GPU session (benchmarks/run_gpu.sh holds the device-tool command; ~6 min on an H200)
    python3 benchmarks/gpu_vs_pytorch.py --var-dir third_party/VAR --out $OUT
    # the same, fewer cases (d16 only)
    python3 benchmarks/gpu_vs_pytorch.py --var-dir third_party/VAR --out $OUT --quick
    # CPU comparison at the real VAR-d16 shapes (issue 18): fp32 both sides, one thread each,
    # pinned to one core (`make bench-cpu`; ~25 min on this repository's 2-core machine):
    .venv/bin/python benchmarks/gpu_vs_pytorch.py --cpu --cpu-core 1 --var-dir /work/var_ref \
        --torch-python /work/refenv/bin/python --out /tmp/gvp_cpu
    # CPU end-to-end check at tiny shapes (both sides), this repository's machines:
    .venv/bin/python benchmarks/gpu_vs_pytorch.py --cpu-smoke --var-dir /work/var_ref \
        --torch-python /work/refenv/bin/python --out /tmp/gvp_smoke

Process tree: this orchestrator imports neither framework. It runs
  1. benchmarks/torch_var_side.py with --torch-python (VAR imported from --var-dir at run time);
  2. benchmarks/jax_side.py once per model group (var-d16, var-d24, em-d16, em-d24), so each
     group starts with an empty device (clean peak-memory counters per group).
Each side appends JSON lines as cases finish, so a run cut short keeps what it measured.

The JAX cases (random weights; the project's modules, samplers and optimiser recipe):
  var-dN-train-tok     VAR-mode training step: tokenise the images with the VQ-VAE
                       (tokenizer.encode + teacher_forcing_inputs, no gradient), VAR forward with
                       label dropout + drop-path, cross-entropy, backward, the project's VAR
                       optimiser (train/optim.make_optimizer: clip 2.0, AdamW 0.9/0.95, wd 0.05
                       with VAR's no-decay list), params and optimiser state donated.
  var-dN-train-pretok  the same step fed token maps (pre-tokenised data; the teacher-forcing
                       inputs are still built from them inside the step).
  var-dN-tokenise      the tokenisation alone (compare with PyTorch's "of which tokenising").
  var-dN-sample-bB     sampling.var_sampler.sample_var_tokens: CFG 1.5, top-k 900, top-p 0.96,
                       VQ-VAE decode
                       included, one jit; B = --sample-batch and 1 (latency).
  var-dN-decode-bB     the VQ-VAE decode alone (its share of batch sampling).
  em-dN-train-pretok / em-dN-train-tok
                       EarthMapper joint mode (2 x 680 tokens): models.earthmapper.loss_fn (CE
                       over both halves + Semantic Infusion on precomputed DINOv2-sized grids)
                       with the same optimiser; tokens given / images tokenised in the step.
  em-dN-sat2map-bB / em-dN-map2sat-bB / em-d16-sat2map-b1
                       translation: encode the source image + sampling.earthmapper_sampler
                       .sample_joint with the default guidance triples (4 CFG branches),
                       complexity guidance, top-k 100 / top-p 0.55, decode; one jit. The
                       sampler builds per-layer caches, so it runs with unrolled layers.

PyTorch side: see torch_var_side.py (VAR's own modules and AmpOptimizer: bf16 autocast, SDPA,
fp32/TF32 tokenisation, fused AdamW, clip 2.0; autoregressive_infer_cfg with decode).

--cpu (issue 18): the five cases of that issue at the real VAR-d16 shapes (256², 10 scales, 680
tokens, V 4096), training B 2, sampling B 4 and 1, float32 on both sides with no autocast (the
PyTorch side then steps plain fused AdamW with clip 2.0 and needs only VAR's models/ and
dist.py, not utils/amp_sc.py), one thread per side (XLA_FLAGS single-threaded Eigen and
intra-op pool, torch.set_num_threads(1), OMP/MKL 1), programs compiled one at a time,
optionally pinned with --cpu-core (os.sched_setaffinity, inherited by both sides). Each side
makes one untimed call per case (JAX: the first call after compilation, whose time is
reported as "first call") then --steps / --sample-steps / --latency-steps timed calls. Our
side's preset is the CPU winner of issue 18's levers (benchmarks/RESULTS.md): attention
"xla_bias" (the mask as an additive bias) for training, layers scanned for training and
unrolled for sampling (--sample-scan 0).

FLOPs per training step (transformer only: 2 per weight and token for the 12·C² weights of
a layer and the C·V head, 4·L·C per token and layer for attention's two products; x3 with
the backward pass):
    3 * L * B * (2 * (12 * C^2 * depth + C * V) + 4 * L * C * depth)
with L = 680 (VAR) or 1360 (EarthMapper joint), C = 64 * depth, V = 4096. TFLOP/s = that / step
time; MFU = TFLOP/s / the card's bf16 dense matmul rate as measured on this workplace's machines
(H200 790, H100 798 TFLOP/s; --peak-tflops overrides).
Peak memory: the device's peak_bytes_in_use in that group's process so far (cases of a group run
in the order listed, train-tok first), and the compiled program's own footprint (XLA memory
analysis: arguments + outputs - aliased + temporaries), which is per case. Compile time is
lowering + XLA compilation (--compile-threads programs compile concurrently; each figure is
that program's own wall time). Warm-up calls, then timed calls, each ended with
block_until_ready; the median is reported.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FLOP_FORMULA = "3·L·B·(2·(12·C²·depth + C·V) + 4·L·C·depth)"
# bf16 dense matmul rates measured on this workplace's cards (below the datasheet peaks)
PEAK_TFLOPS_BY_CARD = {"H200": 790.0, "H100": 798.0}
GIB = 2**30
# one thread per side in --cpu mode (XLA:CPU's Eigen pool and its intra-op pool)
CPU_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
CPU_CASES = "train-pretok,train-tok,tokenise,sample,sample1"
START = time.time()

# group -> relative share of the JAX time budget
GROUP_WEIGHTS = {"var-d16": 1.0, "var-d24": 1.1, "em-d16": 1.2, "em-d24": 1.4}
LEVER_KEYS = ("dtype", "attention", "sample_attention", "scan", "sample_scan", "remat",
              "tok_dtype")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')} +{time.time() - START:6.1f}s] {msg}", flush=True)


def train_flops(L, B, C, depth, V):
    """Transformer-only FLOPs of one training step (forward + backward)."""
    return 3 * L * B * (2 * (12 * C * C * depth + C * V) + 4 * L * C * depth)


def parse_map(text):
    return {k: int(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}


def peak_for(card: str, flag):
    """The MFU denominator: --peak-tflops, else the measured rate of this card kind."""
    if flag is not None:
        return flag or None
    return next((v for k, v in PEAK_TFLOPS_BY_CARD.items() if k in card), None)


def depth_of(name):
    """Model size name -> depth ("tiny" is the 2-layer smoke model)."""
    return 2 if name == "tiny" else int(name[1:])


# ============================================================================ arguments


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_vs_pytorch_out", help="results.json + table.md here")
    ap.add_argument("--var-dir", default=os.path.join(REPO, "third_party", "VAR"),
                    help="local checkout of FoundationVision/VAR (imported at run time)")
    ap.add_argument("--torch-python", default=sys.executable,
                    help="Python with torch for the PyTorch side (device machine: python3)")
    ap.add_argument("--jax-python", default=sys.executable, help="Python for the JAX workers")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-jax", action="store_true")
    ap.add_argument("--models", default="var-d16,var-d24,em-d16,em-d24",
                    help="JAX groups to run (var-dN / em-dN; 'tiny' for the smoke shapes)")
    ap.add_argument("--cases", default="train-tok,train-pretok,tokenise,sample,sample1,decode,"
                    "sat2map,map2sat,sat2map1",
                    help="case kinds to run (both sides where they exist)")
    ap.add_argument("--batch", default="d16=64,d24=32", help="VAR training batch per depth")
    ap.add_argument("--em-batch", default="d16=32,d24=16",
                    help="EarthMapper training batch per depth (same tokens per step as VAR's)")
    ap.add_argument("--sample-batch", type=int, default=64)
    ap.add_argument("--em-sample-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="timed training steps (at most)")
    ap.add_argument("--sample-steps", type=int, default=3, help="timed batch samplings (at most)")
    ap.add_argument("--latency-steps", type=int, default=10, help="timed batch-1 samplings")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    ap.add_argument("--case-seconds", type=float, default=5.0,
                    help="a case's timed loop stops after this long (at least 2 calls)")
    ap.add_argument("--budget-s", type=float, default=330.0,
                    help="whole run; cases that would start after it are skipped")
    ap.add_argument("--torch-share", type=float, default=0.35,
                    help="fraction of the budget after which the PyTorch side starts no case")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="bf16 dense peak for MFU (default by card: H200 790, H100 798; 0 = none)")
    # levers (the base configuration of our side)
    ap.add_argument("--dtype", default="bfloat16", help="transformer compute dtype")
    ap.add_argument("--attention", default="cudnn", help="xla | cudnn | None | einsum (training)")
    ap.add_argument("--sample-attention", default="xla", help="attention kernel when sampling")
    ap.add_argument("--scan", type=int, default=1, help="1: nn.scan over layers")
    ap.add_argument("--sample-scan", type=int, default=None,
                    help="VAR sampling cases: 1 scanned, 0 unrolled layers (default: --scan)")
    ap.add_argument("--remat", default="none", help="none | full | dots | dots_no_batch")
    ap.add_argument("--tok-dtype", default="float32", help="VQ-VAE conv dtype (float32 | bfloat16)")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:key=val,...[|case,case] extra lever setting (keys: dtype, "
                         "attention, sample_attention, scan, sample_scan, remat, tok_dtype), run "
                         "for the "
                         "cases after '|' or else --variant-cases")
    ap.add_argument("--variant-cases", default="var-d16-train-pretok,var-d16-sample-b1",
                    help="cases rerun under every --variant")
    ap.add_argument("--compile-threads", type=int, default=4,
                    help="programs of a group compiled concurrently (XLA releases the GIL)")
    ap.add_argument("--compile-cache", default=None,
                    help="JAX persistent compilation cache directory (a rerun skips compiles)")
    ap.add_argument("--profile", default=None,
                    help="case name(s), comma-separated: after timing, --profile-calls more calls "
                         "under jax.profiler / torch.profiler (benchmarks/cpu_profile.py reads them)")
    ap.add_argument("--profile-calls", type=int, default=3, help="calls traced per profiled case")
    ap.add_argument("--work-dir", default=None, help="per-side JSON lines (default: a temp dir)")
    ap.add_argument("--quick", action="store_true",
                    help="d16 only (VAR + EarthMapper), fewer timed calls, ~3 min")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny shapes, CPU, both sides: proves the script end to end")
    ap.add_argument("--cpu", action="store_true",
                    help="issue 18: real VAR-d16 shapes on CPU, fp32, one thread per side")
    ap.add_argument("--cpu-core", type=int, default=None,
                    help="pin both sides to this CPU core (default: the inherited affinity)")
    # internal (worker processes)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-jsonl", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--lower-only", action="store_true", help=argparse.SUPPRESS)
    return ap


def apply_modes(args, defaults):
    """--quick / --cpu-smoke presets; a flag given explicitly keeps its value."""
    preset = {}
    if args.quick:
        preset.update(models="var-d16,em-d16", steps=5, sample_steps=2, latency_steps=6,
                      budget_s=200.0)
    if args.cpu_smoke:
        preset.update(models="var-tiny,em-tiny", batch="tiny=4", em_batch="tiny=2",
                      sample_batch=2, em_sample_batch=2, steps=2, sample_steps=1,
                      latency_steps=2, warmup=1, case_seconds=1.0, budget_s=1500.0,
                      attention="xla", peak_tflops=0.0, compile_threads=2,
                      variant_cases="var-d2-train-pretok")
    if args.cpu:
        preset.update(models="var-d16", cases=CPU_CASES, batch="d16=2", sample_batch=4,
                      steps=2, sample_steps=2, latency_steps=2, warmup=0, case_seconds=1.0,
                      budget_s=3600.0, torch_share=0.5, dtype="float32", attention="xla_bias",
                      sample_attention="xla", sample_scan=0, tok_dtype="float32", peak_tflops=0.0,
                      compile_threads=1, variant_cases="var-d16-train-pretok,var-d16-sample-b1")
    for k, v in preset.items():
        if getattr(args, k) == defaults[k]:
            setattr(args, k, v)
    return args


def check_args(args):
    """One-line errors for flag combinations that cannot run (validated once, here)."""
    if args.cpu and args.cpu_smoke:
        raise SystemExit("--cpu and --cpu-smoke: choose one (real shapes or the tiny smoke)")
    if args.cpu_core is not None:
        allowed = sorted(os.sched_getaffinity(0))
        if args.cpu_core not in allowed:
            raise SystemExit(f"--cpu-core {args.cpu_core}: not a core this process may use "
                             f"(allowed: {allowed})")


def on_cpu(args):
    return args.cpu or args.cpu_smoke


def cpu_env(env, args):
    """The environment of a worker: CPU platform and, in --cpu mode, one thread."""
    env = dict(env)
    if on_cpu(args):
        env["JAX_PLATFORMS"] = "cpu"
    if args.cpu:
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = (flags + " " + CPU_XLA_FLAGS).strip()
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


def pinning(args):
    """The thread/core line of the table header."""
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    if not args.cpu:
        return f"affinity cores {cores}"
    return (f"pinned to core(s) {cores}; one thread per side (JAX: XLA_FLAGS=\"{CPU_XLA_FLAGS}\"; "
            f"PyTorch: torch.set_num_threads(1)); OMP_NUM_THREADS=MKL_NUM_THREADS=1; float32 both "
            f"sides, no autocast")


# ============================================================================ orchestrator


def read_jsonl(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    return out


def torch_cmd(args, path, deadline):
    """The PyTorch side's command line (None when no VAR group is asked for)."""
    depths = sorted({depth_of(m.split("-")[1]) for m in args.models.split(",") if m.startswith("var-")})
    if not depths:
        return None
    names = {depth_of(m.split("-")[1]): m.split("-")[1] for m in args.models.split(",")}
    batches = parse_map(args.batch)
    tk = {"train-tok": "train", "tokenise": "tokenise", "train-pretok": "train-pretok",
          "sample": "sample", "sample1": "sample1"}
    kinds = [tk[k] for k in args.cases.split(",") if k in tk]
    # the JAX side's first call after compiling is its untimed call; PyTorch needs one too
    warmup = max(1, args.warmup) if args.cpu else args.warmup
    cmd = [args.torch_python, os.path.join(HERE, "torch_var_side.py"), "--var-dir", args.var_dir,
           "--jsonl", path, "--depths", ",".join(map(str, depths)),
           "--batch", ",".join(f"{d}={batches.get(names[d], 2)}" for d in depths),
           "--sample-batch", str(args.sample_batch), "--cases", ",".join(kinds),
           "--steps", str(args.steps), "--sample-steps", str(args.sample_steps),
           "--latency-steps", str(args.latency_steps), "--warmup", str(warmup),
           "--case-seconds", str(args.case_seconds), "--deadline", str(deadline)]
    if args.peak_tflops is not None:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    if args.cpu_smoke:
        cmd += ["--smoke", "--device", "cpu"]
    if args.cpu:
        cmd += ["--device", "cpu", "--amp", "none", "--sample-amp", "none", "--threads", "1"]
    if args.profile:
        cmd += ["--profile", args.profile, "--profile-calls", str(args.profile_calls),
                "--profile-dir", args.out]
    return cmd


def run_torch(args, work, deadline):
    path = os.path.join(work, "torch.jsonl")
    cmd = torch_cmd(args, path, deadline)
    if cmd is None:
        return []
    if not os.path.isfile(os.path.join(args.var_dir, "models", "var.py")):
        log(f"PyTorch side skipped: {args.var_dir} is not a VAR checkout (see run_gpu.sh)")
        return []
    log("PyTorch side: " + " ".join(cmd))
    env = cpu_env(os.environ, args)
    env.pop("PYTHONPATH", None) if on_cpu(args) else None
    try:
        subprocess.run(cmd, env=env, timeout=max(60.0, deadline - time.time() + 240.0),
                       check=False)
    except subprocess.TimeoutExpired:
        log("PyTorch side: killed at its time limit (partial results kept)")
    return read_jsonl(path)


def run_jax_group(args, work, group, deadline, hard_limit):
    path = os.path.join(work, f"jax-{group}.jsonl")
    argv = list(args.argv)
    cmd = [args.jax_python, os.path.join(HERE, "jax_side.py")] + argv + [
        "--worker", group, "--worker-jsonl", path, "--deadline", str(deadline)]
    env = cpu_env(os.environ, args)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log(f"JAX group {group} (no new case after +{deadline - START:.0f}s)")
    try:
        subprocess.run(cmd, env=env, timeout=hard_limit, check=False)
    except subprocess.TimeoutExpired:
        log(f"JAX group {group}: killed at its time limit (partial results kept)")
    return read_jsonl(path)


def fmt(v, nd=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{nd}g}"
    return str(v)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def cpu_label(kind, batch, args):
    """Issue 18's row names."""
    return {"train-pretok": f"train step, pre-tokenised, B {batch}",
            "train-tok": f"train step, tokenising in the step, B {batch}",
            "tokenise": f"tokenise alone, B {batch}",
            "sample": f"sample + decode, B {batch} (CFG 1.5, top-k 900, top-p 0.96)",
            "sample1": f"sample + decode, B {batch}"}[kind]


def cpu_table(args, torch_recs, jax_recs):
    """Issue 18's table: seconds per call on each side, the throughput ratio and its goal;
    a lever variant (case@name) gets its own row, compared with the same PyTorch run."""
    pt = {r["case"]: r for r in torch_recs if "ms" in r}
    jx = {r["case"]: r for r in jax_recs}
    B = parse_map(args.batch)
    lines = ["| case | JAX | PyTorch VAR | JAX / PyTorch throughput | goal | JAX first call | "
             "JAX compile |", "|---|---|---|---|---|---|---|"]
    for m in args.models.split(","):
        if not m.startswith("var-"):
            continue
        size = m.split("-")[1]
        pre = f"var-d{depth_of(size)}"
        names = {"train-pretok": f"{pre}-train-pretok", "train-tok": f"{pre}-train-tok",
                 "tokenise": f"{pre}-tokenise", "sample": f"{pre}-sample-b{args.sample_batch}",
                 "sample1": f"{pre}-sample-b1"}
        for kind in args.cases.split(","):
            if kind not in names:
                continue
            name = names[kind]
            batch = {"sample": args.sample_batch, "sample1": 1}.get(kind, B.get(size, 2))
            goal = 1.3 if kind.startswith("train") else 1.0
            p = pt.get(name)
            for case in [name] + sorted(c for c in jx if c.startswith(name + "@")):
                o = jx.get(case)
                label = cpu_label(kind, batch, args) + ("" if case == name else
                                                         f" @{case.split('@')[1]}")
                if o is None and p is None:
                    continue
                if o is not None and "ms" not in o:
                    ours = o.get("status", "?")
                else:
                    ours = "–" if o is None else f"{o['ms'] / 1e3:.3g} s"
                ratio = (f"{p['ms'] / o['ms']:.2f}×" if p and o and "ms" in o else "–")
                first = f"{o['first_call_s']:.3g} s" if o and o.get("first_call_s") else "–"
                comp = f"{o['compile_s']:.3g} s" if o and o.get("compile_s") else "–"
                lines.append(f"| {label} | {ours} | "
                             f"{'–' if p is None else format(p['ms'] / 1e3, '.3g') + ' s'} | "
                             f"{ratio} | ≥ {goal}× | {first} | {comp} |")
    return lines


def make_tables(args, torch_recs, jax_recs, meta):
    """Markdown: every case (PyTorch row, then ours), then the issue's targets."""
    pt = {r["case"]: r for r in torch_recs if "ms" in r}
    lines = []
    if args.cpu:
        lines.append(f"CPU: {meta.get('cpu', '?')}; {meta.get('pinning', '?')}. JAX "
                     f"{meta.get('jax', '?')}, torch {meta.get('torch', '?')}. Real VAR-d"
                     f"{'/'.join(m.split('-')[1][1:] for m in args.models.split(',') if m.startswith('var-'))}"
                     " shapes (256², 10 scales, 680 tokens, V 4096), random weights. Time per "
                     "call: the median of the timed calls, after one untimed call per side.")
        lines.append("")
        lines += cpu_table(args, torch_recs, jax_recs)
        lines.append("")
        lines.append("All cases, both sides:")
        lines.append("")
    lines.append(f"Card: {meta['device']}. JAX {meta.get('jax', '?')}, torch {meta.get('torch', '?')}. "
                 f"Our levers: dtype {args.dtype}, attention {args.attention} (sampling "
                 f"{args.sample_attention}), scan {bool(args.scan)} (sampling "
                 f"{bool(args.scan if args.sample_scan is None else args.sample_scan)}), remat {args.remat}, "
                 f"tokenizer {args.tok_dtype}.")
    lines.append(f"Training FLOPs/step = {FLOP_FORMULA} (transformer only; L = 680 VAR, 1360 "
                 f"joint); MFU against {meta.get('peak_tflops') or '–'} TFLOP/s.")
    lines.append("")
    cols = ["case", "side", "batch", "ms/call", "img/s", "TFLOP/s", "MFU", "peak GiB",
            "XLA plan GiB", "compile s", "ours/PyTorch"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    names = []
    for r in torch_recs + jax_recs:
        base = r["case"].split("@")[0]
        if base not in names:
            names.append(base)
    for name in names:
        rows = [r for r in torch_recs if r["case"] == name]
        rows += [r for r in jax_recs if r["case"].split("@")[0] == name]
        for r in rows:
            side = "PyTorch VAR" if r["side"] == "pytorch" else (
                "ours" + ("" if "@" not in r["case"] else " @" + r["case"].split("@")[1]))
            if "ms" not in r:
                lines.append(f"| {r['case']} | {side} | {fmt(r.get('batch'))} | "
                             f"{r.get('status', '?')} |" + " |" * (len(cols) - 4))
                continue
            ratio = None
            ref = pt.get(name)
            if r["side"] == "jax" and ref:
                ratio = r["img_s"] / ref["img_s"]
            lines.append("| " + " | ".join([
                r["case"] if r["side"] == "pytorch" or "@" not in r["case"] else "",
                side, fmt(r.get("batch")), fmt(r["ms"]), fmt(r["img_s"]), fmt(r.get("tflops")),
                "–" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%",
                fmt(r.get("peak_gib")), fmt(r.get("plan_gib")), fmt(r.get("compile_s")),
                "–" if ratio is None else f"{ratio:.2f}×"]) + " |")
    lines.append("")
    # the targets
    jx = {r["case"]: r for r in jax_recs if "ms" in r}
    tl = ["| target | PyTorch | ours | ratio | goal | met |", "|---|---|---|---|---|---|"]

    def target(label, ours_key, pt_key, goal, better="img_s"):
        o, p = jx.get(ours_key), pt.get(pt_key)
        if not o:
            return
        if better == "latency":
            ov = o["ms"]
            pt_ms = f"{fmt(p['ms'])} ms" if p else "–"
            faster = f"{p['ms'] / ov:.2f}× faster" if p else "–"
            met = "yes" if ov < goal else "no"
            tl.append(f"| {label} | {pt_ms} | {fmt(ov)} ms | {faster} | < {goal} ms | {met} |")
            return
        if not p:
            tl.append(f"| {label} | – | {fmt(o['img_s'])} img/s | – | ≥ {goal}× | – |")
            return
        ratio = o["img_s"] / p["img_s"]
        tl.append(f"| {label} | {fmt(p['img_s'])} img/s | {fmt(o['img_s'])} img/s | {ratio:.2f}× | "
                  f"≥ {goal}× | {'yes' if ratio >= goal else 'no'} |")

    for m in args.models.split(","):
        if not m.startswith("var-"):
            continue
        d = f"d{depth_of(m.split('-')[1])}"
        target(f"VAR-{d} train, tokenising", f"var-{d}-train-tok", f"var-{d}-train-tok", 2)
        target(f"VAR-{d} train, pre-tokenised (vs PyTorch tokenising)", f"var-{d}-train-pretok",
               f"var-{d}-train-tok", 3)
        target(f"VAR-{d} sample batch {args.sample_batch} (+decode)",
               f"var-{d}-sample-b{args.sample_batch}", f"var-{d}-sample-b{args.sample_batch}", 3)
        if d == "d16" or args.cpu_smoke:
            target(f"VAR-{d} sample batch 1 latency", f"var-{d}-sample-b1", f"var-{d}-sample-b1",
                   40, better="latency")
        o, p = jx.get(f"var-{d}-train-tok"), pt.get(f"var-{d}-train-tok")
        if o and p and o.get("peak_gib") is not None and p.get("peak_gib") is not None:
            tl.append(f"| VAR-{d} train peak memory | {p['peak_gib']:.1f} GiB | "
                      f"{o['peak_gib']:.1f} GiB | {o['peak_gib'] / p['peak_gib']:.2f} | ≤ 1 | "
                      f"{'yes' if o['peak_gib'] <= p['peak_gib'] else 'no'} |")
    if len(tl) > 2 and not args.cpu:
        lines.append("Targets of issue 6 (same card, same run)" + (
            " — CPU smoke: tiny shapes on a shared CPU, these ratios mean nothing:"
            if args.cpu_smoke else ":"))
        lines.append("")
        lines += tl
    return "\n".join(lines)


def orchestrate(args):
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    args.out = out
    work = args.work_dir or tempfile.mkdtemp(prefix="gvp_")
    os.makedirs(work, exist_ok=True)
    for f in glob.glob(os.path.join(work, "*.jsonl")):
        os.remove(f)
    if args.cpu_core is not None:
        os.sched_setaffinity(0, {args.cpu_core})  # both sides inherit it
    log(pinning(args))
    end = START + args.budget_s
    log(f"budget {args.budget_s:.0f}s; out {out}; work {work}")
    torch_recs, jax_recs = [], []
    if not args.skip_torch:
        torch_recs = run_torch(args, work, START + args.torch_share * args.budget_s)
    if not args.skip_jax:
        groups = [g for g in args.models.split(",") if g]
        weights = [GROUP_WEIGHTS.get(g, 1.0) for g in groups]
        for i, g in enumerate(groups):
            left = max(0.0, end - time.time())
            share = left * weights[i] / sum(weights[i:])
            deadline = time.time() + share
            # a group may overrun its share by its compile time; the hard limit only guards
            # against a hang (the run's own deadline is `end`).
            hard = max(120.0, end - time.time() + 120.0)
            jax_recs += run_jax_group(args, work, g, deadline, hard)
    meta = dict(date=time.strftime("%Y-%m-%d %H:%M"), argv=args.argv,
                device=next((r["device"] for r in jax_recs + torch_recs if "device" in r), "?"),
                jax=next((r["jax"] for r in jax_recs if "jax" in r), None),
                torch=next((r["torch"] for r in torch_recs if "torch" in r), None),
                flop_formula=FLOP_FORMULA,
                peak_tflops=next((r["peak_tflops"] for r in jax_recs + torch_recs
                                  if r.get("peak_tflops")), None),
                wall_s=time.time() - START, cpu=cpu_model(), pinning=pinning(args))
    table = make_tables(args, torch_recs, jax_recs, meta)
    header = (f"## gpu_vs_pytorch {meta['date']}, {meta['device']}"
              + (" (CPU SMOKE: tiny shapes, not performance)" if args.cpu_smoke else "")
              + (" (CPU, one thread per side: issue 18)" if args.cpu else "") + "\n\n"
              f"Command: `python benchmarks/gpu_vs_pytorch.py {' '.join(args.argv)}`\n\n")
    text = header + table + f"\n\nWall time {meta['wall_s']:.0f}s.\n"
    tmp = os.path.join(out, ".table.md.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(out, "table.md"))
    tmp = os.path.join(out, ".results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(dict(meta=meta, pytorch=torch_recs, jax=jax_recs), f, indent=1, default=str)
    os.replace(tmp, os.path.join(out, "results.json"))
    print("\n" + text, flush=True)
    bad = [r["case"] for r in torch_recs + jax_recs
           if str(r.get("status", "")).startswith(("error", "lowering", "compile"))]
    bad += [r["case"] for r in jax_recs if r.get("images_finite") is False
            or r.get("tokens_in_range") is False
            or (r.get("loss") is not None and not math.isfinite(r["loss"]))]
    if bad:
        log(f"FAILED cases: {', '.join(bad)}")
        return 1
    return 0


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = apply_modes(parser.parse_args(argv), vars(parser.parse_args([])))
    args.argv = argv
    check_args(args)
    if args.worker:
        raise SystemExit("--worker is for benchmarks/jax_side.py")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
