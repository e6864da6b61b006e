"""Issue 18: where the time goes, per category, on both sides of the CPU comparison.

    # profile + parse (VAR-d16 real shapes, fp32, one thread per side, pinned to core 1):
    .venv/bin/python benchmarks/cpu_profile.py --var-dir /work/var_ref \
        --torch-python /work/refenv/bin/python --cpu-core 1 --out /tmp/cpu_prof
    # parse a directory written before (no run):
    .venv/bin/python benchmarks/cpu_profile.py --parse-only /tmp/cpu_prof

The run is `gpu_vs_pytorch.py --cpu --profile CASES --profile-calls 1` (one timed call per case,
then one more under jax.profiler / torch.profiler); this script then reads what it wrote:

  * JAX: profile-CASE.xplane.pb (jax.profiler.ProfileData, no extra package) and the optimised
    HLO (hlo-CASE.txt). XLA:CPU emits one trace event per executed HLO instruction (thunk), named
    after it; nested events (a while loop's body inside the while) are reduced to self time.
    Each instruction gets a category from its opcode, the opcodes of the computation a fusion
    calls, and its source metadata (the Python file that emitted it: optax or train/optim.py ->
    optimiser, models/attention.py -> attention).
  * PyTorch: torch-CASE.json (key_averages: self CPU time per aten op), categorised by op name.

Categories: matmul (projections, FFN, head: dots outside the attention core), attention
(QKᵀ and PV products, mask, softmax; PyTorch's fused SDPA kernel is one op), norm/elementwise
(layer norms, AdaLN modulation, GELU, residuals, the loss, the VQ-VAE's group norms),
copies/transposes (copy, transpose, slices, concatenations, cache updates, and a scanned layer
loop's per-layer dynamic slices of the stacked weights / writes of the stacked gradients and
the zero buffers behind them), convolutions (the VQ-VAE), optimiser (global norm, clip, AdamW),
sampling (sort / top-k / top-p / categorical draws), other.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from jax.profiler import ProfileData  # reads the .xplane.pb (jaxlib's reader, no extra package)

HERE = os.path.dirname(os.path.abspath(__file__))
CATEGORIES = ("matmul", "attention", "norm/elementwise", "copies/transposes", "convolutions",
              "optimiser", "sampling", "other")
DEFAULT_CASES = "var-d16-train-pretok,var-d16-sample-b1"
COPY_OPS = {"copy", "transpose", "reshape", "bitcast", "broadcast", "slice", "concatenate",
            "dynamic-slice", "dynamic-update-slice", "pad", "tuple", "get-tuple-element",
            "parameter", "constant", "iota", "copy-start", "copy-done", "reverse"}
SAMPLING_OPS = {"sort", "rng-bit-generator", "rng", "rng-get-and-update-state"}
INDEX_OPS = {"fusion", "subtract", "add", "compare", "select", "clamp", "maximum", "minimum",
             "convert"}
LOOP_NAMES = ("dynamic_index_in_dim", "dynamic_update_index_in_dim", "/broadcast_in_dim")
SAMPLING_NAMES = ("_gumbel", "_uniform", "sort", "top_k", "cumsum", "cumlogsumexp", "categorical",
                  "argmax", "searchsorted")

# ---------------------------------------------------------------- JAX: HLO text + xplane

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S.*?\s([a-z][a-z0-9\-]*)\(")
_COMP = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_SRC = re.compile(r'source_file="([^"]*)"')
_OPNAME = re.compile(r'op_name="([^"]*)"')


def parse_hlo(text):
    """instruction name -> dict(opcode, calls, src, op_name); computation name -> [names]."""
    instrs, comps, current = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        if line.rstrip().endswith("{") and "=" not in line.split("{")[0].split("(")[0]:
            m = _COMP.match(line)
            if m:
                current = m.group(1)
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, opcode = m.group(1), m.group(2)
        src, opn = _SRC.search(line), _OPNAME.search(line)
        instrs[name] = dict(opcode=opcode, calls=_CALLS.findall(line),
                            src=src.group(1) if src else "", op_name=opn.group(1) if opn else "")
        comps[current].append(name)
    return instrs, comps


def _called_ops(name, instrs, comps, depth=0):
    """Opcodes of an instruction and of the computations it calls (fusions, reducers)."""
    info = instrs.get(name)
    if info is None:
        return set(), []
    ops, metas = {info["opcode"]}, [info]
    if info["opcode"] in ("fusion", "call", "custom-call", "reduce", "map") and depth < 3:
        for comp in info["calls"]:
            for inner in comps.get(comp, []):
                o, m = _called_ops(inner, instrs, comps, depth + 1)
                ops |= o
                metas += m
    return ops, metas


def jax_category(name, instrs, comps, train):
    """Category of one executed instruction from its opcodes and its op_name metadata (the
    JAX name stack: which module and primitive emitted it; this HLO prints no source files)."""
    ops, metas = _called_ops(name, instrs, comps)
    if not metas:
        return "other"
    heavy = [m for m in metas if m["opcode"] in ("dot", "convolution")] or metas
    op_name = heavy[0]["op_name"] or metas[0]["op_name"]
    if "convolution" in ops:
        return "convolutions"
    if not op_name and ops <= COPY_OPS | {"fusion"}:
        return "copies/transposes"  # buffers XLA fills (a scan's stacked gradients)
    if any(k in op_name for k in LOOP_NAMES) and ops <= COPY_OPS | INDEX_OPS:
        return "copies/transposes"  # a scanned layer loop slicing / writing its stacked rows
    if train and "jvp(" not in op_name and "VQVAE" not in op_name:
        return "optimiser"  # after value_and_grad: global norm, clip, AdamW, apply_updates
    if "/attn/" in op_name and "/mat_qkv/" not in op_name and "/proj/" not in op_name:
        return "attention"  # QKᵀ, mask, softmax, PV (and q/k's L2 normalisation)
    if "dot" in ops:
        return "matmul"
    if not train and (ops & SAMPLING_OPS or any(k in op_name for k in SAMPLING_NAMES)):
        return "sampling"
    if ops <= COPY_OPS:
        return "copies/transposes"
    if ops <= COPY_OPS | {"while", "conditional", "call"}:
        return "other"
    return "norm/elementwise"


def xplane_self_times(path):
    """name -> (self seconds, count) over the host plane's XLA events, nesting removed."""
    data = ProfileData.from_file(path)
    totals = collections.defaultdict(lambda: [0.0, 0])
    for plane in data.planes:
        if not plane.name.startswith("/host"):
            continue
        for line in plane.lines:
            events = sorted(((e.start_ns, e.duration_ns, e.name) for e in line.events),
                            key=lambda t: (t[0], -t[1]))
            stack = []  # (end_ns, name) of the open events enclosing the current one
            for start, dur, name in events:
                while stack and stack[-1][0] <= start:
                    stack.pop()
                totals[name][0] += dur
                totals[name][1] += 1
                if stack:  # self time: the enclosing event loses what its child took
                    totals[stack[-1][1]][0] -= dur
                stack.append((start + dur, name))
    return {k: (v[0] / 1e9, v[1]) for k, v in totals.items()}


def jax_breakdown(xplane, hlo_text, calls):
    instrs, comps = parse_hlo(hlo_text)
    train = "transpose(jvp(" in hlo_text
    cats = collections.Counter()
    top = collections.Counter()
    unknown = 0.0
    for name, (sec, _) in xplane_self_times(xplane).items():
        base = name.split(":")[0].strip()
        if base in instrs:
            c = jax_category(base, instrs, comps, train)
            cats[c] += sec / calls
            top[(c, base, instrs[base]["opcode"])] += sec / calls
        elif not name.startswith("$"):  # Python frames ($file:line) are not the program's
            unknown += sec / calls
    return cats, unknown, top


# ---------------------------------------------------------------- PyTorch: key_averages

TORCH_RULES = (
    ("optimiser", ("adam", "optimizer", "clip_grad", "_foreach", "norm_except")),
    ("norm/elementwise", ("log_softmax", "nll_loss", "cross_entropy")),
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention")),
    ("convolutions", ("conv", "upsample", "group_norm", "native_group_norm")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
                "aten::baddbmm", "aten::dot")),
    ("copies/transposes", ("copy_", "contiguous", "clone", "aten::cat", "permute", "transpose",
                           "aten::t", "index", "slice", "select", "unbind", "stack", "expand",
                           "view", "reshape", "as_strided", "chunk", "split", "narrow",
                           "to_copy", "aten::to", "empty", "zero_", "fill_")),
)


def torch_category(name, sampling=False):
    low = name.lower()
    if sampling and any(k in low for k in ("softmax", "masked_fill", "topk", "sort", "cumsum",
                                            "multinomial", "exponential", "scatter", "gather")):
        return "sampling"
    if low.startswith(("autograd::engine", "torch::autograd")):
        return "other"  # wrappers: their self time is bookkeeping
    for cat, keys in TORCH_RULES:
        if any(k in low for k in keys):
            if cat == "convolutions" and "group_norm" in low:
                return "norm/elementwise"
            return cat
    if low.startswith("aten::") or low.startswith("mkldnn"):
        return "norm/elementwise"
    return "other"


def torch_breakdown(path):
    with open(path) as f:
        data = json.load(f)
    calls = data.get("calls", 1)
    cats, top = collections.Counter(), collections.Counter()
    for row in data["ops"]:
        if row["name"].startswith("ProfilerStep"):
            continue
        c = torch_category(row["name"], sampling="-sample-" in data["case"])
        cats[c] += row["self_us"] / 1e6 / calls
        top[(c, row["name"], "")] += row["self_us"] / 1e6 / calls
    return cats, top


# ---------------------------------------------------------------- report


def walls(out):
    """case -> {side: seconds per call} from the run's results.json."""
    try:
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
    except OSError:
        return {}
    w = collections.defaultdict(dict)
    for side in ("jax", "pytorch"):
        for r in res.get(side, []):
            if "ms" in r:
                w[r["case"]][side] = r["ms"] / 1e3
    return w


def table(case, jax_cats, torch_cats, unknown=0.0, wall=None):
    lines = [f"#### {case} (seconds per call, self time)", "",
             "| category | JAX | PyTorch VAR | JAX − PyTorch |", "|---|---|---|---|"]
    for c in CATEGORIES:
        j, t = jax_cats.get(c), torch_cats.get(c)
        if not j and not t:
            continue
        diff = "–" if j is None or t is None else f"{j - t:+.2f}"
        lines.append(f"| {c} | {'–' if j is None else f'{j:.2f}'} | "
                     f"{'–' if t is None else f'{t:.2f}'} | {diff} |")
    if unknown:
        # executor / wait events: they overlap the ops (other threads), not added to the total
        lines.append(f"| (XLA runtime events, overlapping) | {unknown:.2f} | – | – |")
    jt = sum(jax_cats.values())
    tt = sum(torch_cats.values())
    lines.append(f"| **total of the ops above** | {jt:.2f} | {tt:.2f} | {jt - tt:+.2f} |")
    if wall:
        j, t = wall.get("jax"), wall.get("pytorch")
        lines.append(f"| wall time per call (timed run) | {'–' if j is None else f'{j:.2f}'} | "
                     f"{'–' if t is None else f'{t:.2f}'} | "
                     f"{'–' if j is None or t is None else f'{j - t:+.2f}'} |")
    return lines


def top_ops(top, n=12):
    lines = ["| category | op | opcode | s/call |", "|---|---|---|---|"]
    for (c, name, opcode), sec in top.most_common(n):
        lines.append(f"| {c} | `{name}` | {opcode} | {sec:.3f} |")
    return lines


def report(out, calls):
    lines, wall = [], walls(out)
    names = sorted({os.path.basename(p)[len("hlo-"):-len(".txt")]
                    for p in glob.glob(os.path.join(out, "hlo-*.txt"))} |
                   {os.path.basename(p)[len("torch-"):-len(".json")]
                    for p in glob.glob(os.path.join(out, "torch-*.json"))})
    for case in names:
        jc, tc, unknown, jtop, ttop = {}, {}, 0.0, collections.Counter(), collections.Counter()
        xp = glob.glob(os.path.join(out, f"profile-{case}.xplane.pb*"))
        hlo = os.path.join(out, f"hlo-{case}.txt")
        if xp and os.path.exists(hlo):
            path = xp[0]
            if path.endswith(".gz"):
                tmp = tempfile.NamedTemporaryFile(suffix=".xplane.pb", delete=False).name
                with gzip.open(path, "rb") as fi, open(tmp, "wb") as fo:
                    shutil.copyfileobj(fi, fo)
                path = tmp
            with open(hlo) as f:
                jc, unknown, jtop = jax_breakdown(path, f.read(), calls)
        tp = os.path.join(out, f"torch-{case}.json")
        if os.path.exists(tp):
            tc, ttop = torch_breakdown(tp)
        lines += table(case, jc, tc, unknown, wall.get(case)) + [""]
        if jtop:
            lines += [f"JAX, heaviest ops of {case}:", ""] + top_ops(jtop) + [""]
        if ttop:
            lines += [f"PyTorch, heaviest ops of {case}:", ""] + top_ops(ttop) + [""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="cpu_profile_out")
    ap.add_argument("--parse-only", default=None, help="a directory written before: no run")
    ap.add_argument("--cases", default=DEFAULT_CASES, help="case names to profile")
    ap.add_argument("--var-dir", default=None)
    ap.add_argument("--torch-python", default=None)
    ap.add_argument("--cpu-core", default=None)
    ap.add_argument("--calls", type=int, default=1, help="profiled calls per case")
    ap.add_argument("--extra", default="", help="more gpu_vs_pytorch.py flags (one string)")
    args = ap.parse_args(argv)
    out = args.parse_only or os.path.abspath(args.out)
    if not args.parse_only:
        kinds = sorted({"sample1" if c.endswith("-b1") else "sample" if "-sample-" in c
                        else c.split("-", 2)[2] for c in args.cases.split(",")})
        cmd = [sys.executable, os.path.join(HERE, "gpu_vs_pytorch.py"), "--cpu", "--out", out,
               "--cases", ",".join(kinds), "--profile", args.cases, "--profile-calls",
               str(args.calls), "--steps", "1", "--sample-steps", "1", "--latency-steps", "1"]
        if args.var_dir:
            cmd += ["--var-dir", args.var_dir]
        if args.torch_python:
            cmd += ["--torch-python", args.torch_python]
        if args.cpu_core is not None:
            cmd += ["--cpu-core", str(args.cpu_core)]
        cmd += args.extra.split()
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=False)
    text = report(out, args.calls)
    with open(os.path.join(out, "breakdown.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
