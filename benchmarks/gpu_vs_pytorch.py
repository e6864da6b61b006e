"""Issue 6: EarthMapper-JAX against the official PyTorch VAR, on the same card, in one run.

One command runs both sides one after the other (never at once: each side gets the whole card)
and prints one markdown table; everything is also written to --out (results.json, table.md).

    # GPU session (see benchmarks/run_gpu.sh for the device-tool command, ~6 min on an H200)
    python3 benchmarks/gpu_vs_pytorch.py --var-dir third_party/VAR --out $OUT
    # the same, fewer cases (d16 only)
    python3 benchmarks/gpu_vs_pytorch.py --var-dir third_party/VAR --out $OUT --quick
    # CPU end-to-end check at tiny shapes (both sides), this repository's machines:
    .venv/bin/python benchmarks/gpu_vs_pytorch.py --cpu-smoke --var-dir /work/var_ref \
        --torch-python /work/refenv/bin/python --out /tmp/gvp_smoke

Process tree: this orchestrator imports neither framework. It runs
  1. benchmarks/torch_var_side.py with --torch-python (VAR imported from --var-dir at run time);
  2. one JAX worker per model group (var-d16, var-d24, em-d16, em-d24), this file with --worker,
     so each group starts with an empty device (clean peak-memory counters per group).
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
  var-dN-sample-bB     sampling_var_tokens: CFG 1.5, top-k 900, top-p 0.96, VQ-VAE decode
                       included, one jit; B = --sample-batch and 1 (latency).
  var-dN-decode-bB     the VQ-VAE decode alone (its share of batch sampling).
  em-dN-train-pretok / em-dN-train-tok
                       EarthMapper joint mode (2 x 680 tokens): models.earthmapper.loss_fn (CE
                       over both halves + Semantic Infusion on precomputed DINOv2-sized grids)
                       with the same optimiser; tokens given / images tokenised in the step.
  em-dN-sat2map-bB / em-dN-map2sat-bB / em-dN-sat2map-b1
                       translation: encode the source image + sampling.earthmapper_sampler
                       .sample_joint with the default guidance triples (4 CFG branches),
                       complexity guidance, top-k 100 / top-p 0.55, decode; one jit.

FLOPs per training step (transformer only, the formula of shared/PERF-NOTES.md):
    3 * L * B * (2 * (12 * C^2 * depth + C * V) + 4 * L * C * depth)
with L = 680 (VAR) or 1360 (EarthMapper joint), C = 64 * depth, V = 4096. TFLOP/s = that / step
time; MFU = TFLOP/s / --peak-tflops (790: the bf16 dense matmul rate measured on an H200).
Peak memory: the device's peak_bytes_in_use in that group's process so far (cases of a group run
in the order listed, train-tok first), and the compiled program's own footprint (XLA memory
analysis: arguments + outputs - aliased + temporaries), which is per case. Compile time is
lowering + XLA compilation (--compile-threads programs compile concurrently; each figure is
that program's own wall time). Warm-up calls, then timed calls, each ended with
block_until_ready; the median is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FLOP_FORMULA = "3·L·B·(2·(12·C²·depth + C·V) + 4·L·C·depth)"
H200_BF16_TFLOPS = 790.0
GIB = 2**30
START = time.time()

# group -> relative share of the JAX time budget
GROUP_WEIGHTS = {"var-d16": 1.0, "var-d24": 1.1, "em-d16": 1.2, "em-d24": 1.4}
LEVER_KEYS = ("dtype", "attention", "sample_attention", "scan", "remat", "tok_dtype")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')} +{time.time() - START:6.1f}s] {msg}", flush=True)


def train_flops(L, B, C, depth, V):
    """Transformer-only FLOPs of one training step (forward + backward)."""
    return 3 * L * B * (2 * (12 * C * C * depth + C * V) + 4 * L * C * depth)


def parse_map(text):
    return {k: int(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}


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
    ap.add_argument("--budget-s", type=float, default=345.0,
                    help="whole run; cases that would start after it are skipped")
    ap.add_argument("--torch-share", type=float, default=0.25,
                    help="fraction of the budget after which the PyTorch side starts no case")
    ap.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS,
                    help="bf16 dense peak for MFU (790 = measured H200; 0 = no MFU)")
    # levers (the base configuration of our side)
    ap.add_argument("--dtype", default="bfloat16", help="transformer compute dtype")
    ap.add_argument("--attention", default="cudnn", help="xla | cudnn | None | einsum (training)")
    ap.add_argument("--sample-attention", default="xla", help="attention kernel when sampling")
    ap.add_argument("--scan", type=int, default=1, help="1: nn.scan over layers")
    ap.add_argument("--remat", default="none", help="none | full | dots | dots_no_batch")
    ap.add_argument("--tok-dtype", default="float32", help="VQ-VAE conv dtype (float32 | bfloat16)")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:key=val,... extra lever setting (keys: dtype, attention, "
                         "sample_attention, scan, remat, tok_dtype), run for --variant-cases")
    ap.add_argument("--variant-cases", default="var-d16-train-pretok,var-d16-sample-b1",
                    help="cases rerun under every --variant")
    ap.add_argument("--compile-threads", type=int, default=3,
                    help="programs of a group compiled concurrently (XLA releases the GIL)")
    ap.add_argument("--compile-cache", default=None,
                    help="JAX persistent compilation cache directory (a rerun skips compiles)")
    ap.add_argument("--profile", default=None, help="case name: write a jax.profiler trace")
    ap.add_argument("--work-dir", default=None, help="per-side JSON lines (default: a temp dir)")
    ap.add_argument("--quick", action="store_true",
                    help="d16 only (VAR + EarthMapper), fewer timed calls, ~3 min")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny shapes, CPU, both sides: proves the script end to end")
    # internal (worker processes)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-jsonl", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
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
    for k, v in preset.items():
        if getattr(args, k) == defaults[k]:
            setattr(args, k, v)
    return args


# ============================================================================ JAX worker


def depth_of(name):
    return 2 if name == "tiny" else int(name[1:])


@dataclasses.dataclass
class Case:
    name: str
    kind: str
    model: str
    batch: int
    fn: Callable
    abstract: tuple
    make_args: Callable[[], tuple]
    n_max: int
    donate: tuple = ()
    flops: Optional[float] = None
    L: Optional[int] = None
    update: Optional[Callable] = None   # (args, out) -> args of the next call (donated state)
    finish: Optional[Callable] = None   # (args, out) -> dict of sanity fields; keeps the state
    settings: dict = dataclasses.field(default_factory=dict)
    compiled: Any = None
    compile_s: Optional[float] = None
    error: Optional[str] = None


def worker_main(args):
    """Runs one model group's cases (this process owns the device)."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np
    import optax

    from earthmapper_jax import tokenizer as tok_lib
    from earthmapper_jax.models import earthmapper as em
    from earthmapper_jax.models import var as var_lib
    from earthmapper_jax.sampling import earthmapper_sampler as ems
    from earthmapper_jax.sampling import guidance as G
    from earthmapper_jax.sampling.var_sampler import sample_var_tokens
    from earthmapper_jax.tokenizer.model import build as build_tok
    from earthmapper_jax.train import optim

    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    group = args.worker
    mode, size = group.split("-")
    depth = depth_of(size)
    dev = jax.devices()[0]
    log(f"jax {jax.__version__} on {dev.device_kind} ({jax.default_backend()}): group {group}")
    kinds = set(args.cases.split(","))
    smoke = size == "tiny"
    out_path = args.worker_jsonl

    def emit(rec):
        rec.update(side="jax", device=dev.device_kind, jax=jax.__version__, group=group)
        with open(out_path, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")

    def base_settings():
        return dict(dtype=args.dtype, attention=None if args.attention == "None" else args.attention,
                    sample_attention=args.sample_attention, scan=bool(args.scan),
                    remat=args.remat, tok_dtype=args.tok_dtype)

    def parse_variant(text):
        name, _, kvs = text.partition(":")
        s = base_settings()
        for kv in filter(None, kvs.split(",")):
            k, v = kv.split("=")
            if k not in LEVER_KEYS:
                raise SystemExit(f"--variant {text!r}: unknown lever {k!r}; expected {LEVER_KEYS}")
            s[k] = bool(int(v)) if k == "scan" else (None if v == "None" else v)
        return name, s

    # ---- shared pieces: tokenizer, params (filled from abstract shapes: no init compile)

    if mode == "var":
        base_cfg = var_lib.var_config(size)
    else:
        base_cfg = em.model_config(size)
    pn = tuple(base_cfg.patch_nums)
    Lh = sum(p * p for p in pn)
    C, V, cvae = int(base_cfg.embed_dim), int(base_cfg.vocab_size), int(base_cfg.cvae)
    image = 16 * pn[-1]
    key0 = jax.random.key(0)

    tok_cache = {}

    def tokenizer(dtype):
        if dtype not in tok_cache:
            tcfg = dict(vocab_size=V, z_channels=cvae, image_size=image, patch_nums=pn, dtype=dtype)
            if smoke:
                tcfg["ch"] = 32
            tok_cache[dtype] = (tcfg, build_tok(tcfg), None)
        return tok_cache[dtype]

    def tok_params(dtype):
        tcfg, mod, p = tokenizer(dtype)
        if p is None:
            p = tok_lib.init_params(tcfg, jax.random.key(7))
            tok_cache[dtype] = (tcfg, mod, p)
        return p

    def tok_abstract(dtype):
        tcfg, _, _ = tokenizer(dtype)
        return jax.eval_shape(lambda k: tok_lib.init_params(tcfg, k), jax.random.key(7))

    def path_name(path):
        return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)

    def fill(abstract, seed):
        """Random params of the abstract tree's shapes: N(0, 0.02) matrices, zero vectors,
        VAR's initial log-scale for scale_mul. One small jit (rbg key: fast to compile)."""
        flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)

        @jax.jit
        def make():
            k = jax.random.wrap_key_data(jnp.array([seed, 1, 2, 3], jnp.uint32), impl="rbg")
            keys = jax.random.split(k, len(flat))
            leaves = []
            for (path, a), kk in zip(flat, keys):
                name = path_name(path)
                if name.endswith("scale_mul"):
                    leaves.append(jnp.full(a.shape, math.log(4.0), a.dtype))
                elif len(a.shape) >= 2:
                    leaves.append((0.02 * jax.random.normal(kk, a.shape, jnp.float32)).astype(a.dtype))
                else:
                    leaves.append(jnp.zeros(a.shape, a.dtype))
            return leaves

        return jax.tree_util.tree_unflatten(treedef, make())

    em_tok_dir = None
    if mode == "em":
        # loss_fn builds the tokenizer module from config.model.tokenizer_dir/config.json; the
        # (random) params themselves are passed in `frozen`.
        em_tok_dir = tempfile.mkdtemp(prefix="gvp_tok_")
        tcfg = tokenizer(args.tok_dtype)[0]
        with open(os.path.join(em_tok_dir, "config.json"), "w") as f:
            json.dump({"kind": "tokenizer", "format_version": 1, "config": dict(tcfg), "meta": {}},
                      f)

    def model_cfg(s, for_sampling=False):
        over = dict(dtype=s["dtype"], attention=s["attention"], sample_attention=s["sample_attention"],
                    scan_layers=s["scan"], remat=s["remat"])
        if for_sampling:
            over["attention"] = s["sample_attention"]
        if mode == "var":
            return var_lib.var_config(size, **over)
        if for_sampling:
            # earthmapper_sampler.sample_joint builds unstacked caches: sample unrolled
            over["scan_layers"] = False
        tok_dir = em_tok_dir
        return em.model_config(size, tokenizer_dir=tok_dir, **over)

    def module_of(cfg):
        return var_lib.build(cfg) if mode == "var" else em.build(cfg)

    def params_abstract(module):
        if mode == "var":
            dummy = (jnp.zeros((1,), jnp.int32), jnp.zeros((1, Lh - 1, cvae), jnp.float32))
        else:
            tf = jnp.zeros((1, Lh - 1, cvae), jnp.float32)
            dummy = (jnp.zeros((1, 2), jnp.float32), tf, tf)
        return jax.eval_shape(module.init, key0, *dummy)["params"]

    # materialised params per (scan, for-sampling-layout); train cases put back what they
    # return (the donated inputs are gone)
    holder = {}

    def params_for(module, layout_key):
        if holder.get(layout_key) is None:
            holder[layout_key] = fill(params_abstract(module), 1)
        return holder[layout_key]

    def make_tx(B):
        oc = ml_collections.ConfigDict(dict(base_lr=1e-4, weight_decay=0.05, clip_norm=2.0,
                                            b1=0.9, b2=0.95, final_lr_frac=0.1))
        tx, _ = optim.make_optimizer(oc, global_batch=B, total_steps=100_000, warmup_steps=0)
        return tx

    rng_np = np.random.default_rng(0)

    def rand_images(B):
        return jnp.asarray(rng_np.uniform(-1, 1, (B, image, image, 3)), jnp.float32)

    def rand_tokens(B):
        return [jnp.asarray(rng_np.integers(0, V, (B, p, p)), jnp.int32) for p in pn]

    def sds(x):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), x)

    # ---- VAR-mode cases

    def var_train_case(name, s, B, tokenise):
        cfg = model_cfg(s)
        module = module_of(cfg)
        _, tok_mod, _ = tokenizer(s["tok_dtype"])
        tx = make_tx(B)

        def step(params, opt_state, tparams, labels, data, key):
            tp = {"params": tparams}
            if tokenise:
                idx = tok_mod.apply(tp, data, method="encode")
            else:
                idx = data
            x = tok_mod.apply(tp, idx, method="teacher_forcing_inputs")
            targets = jnp.concatenate([i.reshape(i.shape[0], -1) for i in idx], 1)
            x, targets = jax.lax.stop_gradient(x), jax.lax.stop_gradient(targets)

            def loss_fn(p):
                logits = module.apply({"params": p}, labels, x, False, rngs={"dropout": key})
                return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads),
                                       "param_norm": optax.global_norm(params)}

        layout = ("train", s["scan"])
        pa = params_abstract(module)
        labels = jnp.asarray(rng_np.integers(0, base_cfg.num_classes, (B,)), jnp.int32)
        data = rand_images(B) if tokenise else rand_tokens(B)
        tpa = tok_abstract(s["tok_dtype"])

        def make_args():
            p = params_for(module, layout)
            holder[layout] = None  # donated
            return (p, tx.init(p), tok_params(s["tok_dtype"]), labels, data, jax.random.key(1))

        def update(a, out):
            return (out[0], out[1]) + a[2:]

        def finish(a, out):
            holder[layout] = out[0]
            return {"loss": float(out[2]["loss"]), "grad_norm": float(out[2]["grad_norm"])}

        abstract = (pa, jax.eval_shape(tx.init, pa), tpa, sds(labels), sds(data),
                    jax.random.key(1))
        return Case(name, "train", f"VAR-d{depth}", B, step, abstract, make_args,
                    n_max=args.steps, donate=(0, 1), flops=train_flops(Lh, B, C, depth, V), L=Lh,
                    update=update, finish=finish, settings=s)

    def var_sample_case(name, s, B, n_max):
        cfg = model_cfg(s, for_sampling=True)
        module = module_of(cfg)
        _, tok_mod, _ = tokenizer(s["tok_dtype"])
        top_k = min(900, V)
        fn = lambda *a: sample_var_tokens(module, tok_mod, *a, top_k=top_k, more_smooth=False,  # noqa: E731
                                          guided=True, decode=True)
        layout = ("train", s["scan"])  # same parameter layout as training (scan or not)
        labels = jnp.arange(B, dtype=jnp.int32) % base_cfg.num_classes
        scal = (jnp.float32(1.5), jnp.float32(0.96), jnp.float32(1.0))

        def make_args():
            return (params_for(module, layout), tok_params(s["tok_dtype"]), labels,
                    jax.random.key(2)) + scal

        def finish(a, out):
            maps, images = out
            return {"images_finite": bool(jnp.isfinite(images).all()),
                    "tokens_in_range": bool(all((m >= 0).all() & (m < V).all() for m in maps))}

        abstract = (params_abstract(module), tok_abstract(s["tok_dtype"]), sds(labels),
                    jax.random.key(2)) + sds(scal)
        return Case(name, "sample", f"VAR-d{depth}", B, fn, abstract, make_args, n_max=n_max,
                    finish=finish, settings=s)

    def tokenise_case(name, s, B):
        _, tok_mod, _ = tokenizer(s["tok_dtype"])

        def fn(tparams, images):
            tp = {"params": tparams}
            idx = tok_mod.apply(tp, images, method="encode")
            return idx, tok_mod.apply(tp, idx, method="teacher_forcing_inputs")

        images = rand_images(B)
        return Case(name, "tokenise", f"VAR-d{depth}", B, fn,
                    (tok_abstract(s["tok_dtype"]), sds(images)),
                    lambda: (tok_params(s["tok_dtype"]), images), n_max=args.steps, settings=s)

    def decode_case(name, s, B):
        _, tok_mod, _ = tokenizer(s["tok_dtype"])
        fn = lambda tparams, f: tok_mod.apply({"params": tparams}, f, method="decode_fhat")  # noqa: E731
        f_hat = jnp.asarray(rng_np.normal(size=(B, pn[-1], pn[-1], cvae)), jnp.float32)
        return Case(name, "decode", f"VAR-d{depth}", B, fn,
                    (tok_abstract(s["tok_dtype"]), sds(f_hat)),
                    lambda: (tok_params(s["tok_dtype"]), f_hat), n_max=args.sample_steps,
                    settings=s)

    # ---- EarthMapper joint-mode cases

    def em_sem(B, mc):
        var_ = em.dinov2_variants()[mc.si_encoder]
        g = int(mc.si_image_size) // var_["patch_size"]
        return jnp.asarray(rng_np.normal(size=(B, g, g, var_["embed_dim"])), jnp.float32)

    def em_coords(B):
        return jnp.asarray(np.stack([rng_np.uniform(18, 50, B), rng_np.uniform(75, 130, B)], 1),
                           jnp.float32)

    def em_train_case(name, s, B, tokenise):
        mc = model_cfg(s)
        module = module_of(mc)
        tx = make_tx(B)
        batch = {"coords": em_coords(B)}
        if tokenise:
            batch["sat_image"], batch["map_image"] = rand_images(B), rand_images(B)
        else:
            flat = lambda: jnp.concatenate([t.reshape(B, -1) for t in rand_tokens(B)], 1)  # noqa: E731
            batch["sat_tokens"], batch["map_tokens"] = flat(), flat()
        if int(mc.si_layer) and float(mc.si_weight) > 0:
            batch["sat_sem"], batch["map_sem"] = em_sem(B, mc), em_sem(B, mc)

        def step(params, opt_state, tparams, batch, key):
            frozen = {"tokenizer": tparams, "dinov2": None}
            (loss, aux), grads = jax.value_and_grad(em.loss_fn, has_aux=True)(
                params, batch, key, mc, frozen)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads),
                                       "param_norm": optax.global_norm(params)}

        layout = ("train", s["scan"])
        pa = params_abstract(module)
        tpa = tok_abstract(s["tok_dtype"])

        def make_args():
            p = params_for(module, layout)
            holder[layout] = None
            return (p, tx.init(p), tok_params(s["tok_dtype"]), batch, jax.random.key(1))

        def update(a, out):
            return (out[0], out[1]) + a[2:]

        def finish(a, out):
            holder[layout] = out[0]
            return {"loss": float(out[2]["loss"]), "grad_norm": float(out[2]["grad_norm"])}

        abstract = (pa, jax.eval_shape(tx.init, pa), tpa, sds(batch), jax.random.key(1))
        return Case(name, "train", f"EM-d{depth}", B, step, abstract, make_args, n_max=args.steps,
                    donate=(0, 1), flops=train_flops(2 * Lh, B, C, depth, V), L=2 * Lh,
                    update=update, finish=finish, settings=s)

    def em_translate_case(name, s, B, direction, n_max):
        mc = model_cfg(s, for_sampling=True)
        module = module_of(mc)
        _, tok_mod, _ = tokenizer(s["tok_dtype"])
        src, _ = ems.DIRECTIONS[direction]
        sm = ems.MODALITY_NAMES[src]
        o = dict(ems.DEFAULTS)
        w = ems.DEFAULT_GUIDANCE[direction]
        roles = ["free", "free"]
        roles[sm] = "cond"
        spec = ems.Spec(roles=tuple(roles), branches=("full",) + G.needed_branches(w, True),
                        top_k=int(o["top_k"]), complexity=bool(o["complexity"]), kpf=False,
                        decode=True)
        knobs = {"weights": jnp.asarray(w, jnp.float32), "gamma": jnp.float32(o["gamma"]),
                 "alpha_power": jnp.float32(o["alpha_power"]),
                 "beta_min": jnp.float32(o["beta_min"]), "tau": jnp.float32(2.0),
                 "top_p": jnp.float32(o["top_p"]), "temperature": jnp.float32(o["temperature"])}

        def fn(params, tparams, coords, images, rng, knobs):
            tp = {"params": tparams}
            src_tokens = em.flatten_tokens(tok_mod.apply(tp, images, method="encode"))
            zeros = jnp.zeros_like(src_tokens)
            known, keep = [zeros, zeros], [jnp.zeros(src_tokens.shape, bool)] * 2
            known[sm], keep[sm] = src_tokens, jnp.ones(src_tokens.shape, bool)
            out = ems.sample_joint(module, tok_mod, params, tparams, coords, tuple(known),
                                   tuple(keep), rng, knobs, spec=spec)
            return out["tokens"][1 - sm], out["images"][1 - sm]

        layout = ("sample", False)
        coords, images = em_coords(B), rand_images(B)

        def make_args():
            return (params_for(module, layout), tok_params(s["tok_dtype"]), coords, images,
                    jax.random.key(3), knobs)

        def finish(a, out):
            maps, imgs = out
            return {"images_finite": bool(jnp.isfinite(imgs).all()),
                    "tokens_in_range": bool(all((m >= 0).all() & (m < V).all() for m in maps)),
                    "cfg_branches": len(spec.branches)}

        abstract = (params_abstract(module), tok_abstract(s["tok_dtype"]), sds(coords),
                    sds(images), jax.random.key(3), sds(knobs))
        return Case(name, "sample", f"EM-d{depth}", B, fn, abstract, make_args, n_max=n_max,
                    finish=finish, settings=s)

    # ---- the group's case list (order = run order)

    def group_cases(s, only=None, suffix=""):
        pre = f"{mode}-d{depth}"
        batches = parse_map(args.batch if mode == "var" else args.em_batch)
        B = batches.get(size, 2)
        out = []

        def want(kind, name):
            if only is not None:
                return name in only
            return kind in kinds

        if mode == "var":
            SB = args.sample_batch
            plan = [
                ("train-tok", f"{pre}-train-tok", lambda n: var_train_case(n, s, B, True)),
                ("train-pretok", f"{pre}-train-pretok", lambda n: var_train_case(n, s, B, False)),
                ("tokenise", f"{pre}-tokenise", lambda n: tokenise_case(n, s, B)),
                ("sample", f"{pre}-sample-b{SB}", lambda n: var_sample_case(n, s, SB, args.sample_steps)),
                ("sample1", f"{pre}-sample-b1", lambda n: var_sample_case(n, s, 1, args.latency_steps)),
                ("decode", f"{pre}-decode-b{SB}", lambda n: decode_case(n, s, SB)),
            ]
        else:
            SB = args.em_sample_batch
            plan = [
                ("train-tok", f"{pre}-train-tok", lambda n: em_train_case(n, s, B, True)),
                ("train-pretok", f"{pre}-train-pretok", lambda n: em_train_case(n, s, B, False)),
                ("sat2map", f"{pre}-sat2map-b{SB}",
                 lambda n: em_translate_case(n, s, SB, "sat2map", args.sample_steps)),
                ("map2sat", f"{pre}-map2sat-b{SB}",
                 lambda n: em_translate_case(n, s, SB, "map2sat", args.sample_steps)),
                ("sat2map1", f"{pre}-sat2map-b1",
                 lambda n: em_translate_case(n, s, 1, "sat2map", args.latency_steps)),
            ]
        for kind, name, make in plan:
            if want(kind, name):
                out.append(make(name + suffix))
        return out

    cases = group_cases(base_settings())
    vcases = set(filter(None, args.variant_cases.split(",")))
    for text in args.variant:
        vname, s = parse_variant(text)
        cases += group_cases(s, only=vcases, suffix=f"@{vname}")
    log(f"{group}: {len(cases)} cases: {', '.join(c.name for c in cases)}")

    # ---- compile: lower in turn (tracing holds the GIL), compile concurrently

    def lower(c):
        t = time.perf_counter()
        try:
            lowered = jax.jit(c.fn, donate_argnums=c.donate).lower(*c.abstract)
        except Exception as e:  # noqa: BLE001 - recorded per case, the group goes on
            c.error = f"lowering failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            return None, 0.0
        return lowered, time.perf_counter() - t

    def compile_one(item):
        c, lowered, lower_s = item
        if lowered is None:
            return
        t = time.perf_counter()
        try:
            c.compiled = lowered.compile()
        except Exception as e:  # noqa: BLE001
            c.error = f"compile failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
        c.compile_s = lower_s + time.perf_counter() - t

    from concurrent.futures import ThreadPoolExecutor

    t_compile = time.perf_counter()
    items = []
    for c in cases:
        if args.deadline and time.time() > args.deadline:
            c.error = "skipped (budget)"
            continue
        lowered, s = lower(c)
        items.append((c, lowered, s))
    with ThreadPoolExecutor(max(1, args.compile_threads)) as ex:
        list(ex.map(compile_one, items))
    log(f"{group}: lowered + compiled {len(items)} programs in "
        f"{time.perf_counter() - t_compile:.1f}s")

    # ---- run

    def mem_stats():
        st = dev.memory_stats() or {}
        return st.get("peak_bytes_in_use"), st.get("bytes_in_use")

    def plan_bytes(compiled):
        try:
            m = compiled.memory_analysis()
            return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                    + m.temp_size_in_bytes)
        except Exception:  # noqa: BLE001 - not every backend reports it
            return None

    def xla_flops(compiled):
        try:
            ca = compiled.cost_analysis()
            ca = ca[0] if isinstance(ca, (list, tuple)) else ca
            return float(ca.get("flops")) if ca and ca.get("flops") is not None else None
        except Exception:  # noqa: BLE001
            return None

    for c in cases:
        rec = dict(case=c.name, kind=c.kind, model=c.model, batch=c.batch, L=c.L,
                   settings=c.settings, compile_s=c.compile_s)
        if c.error:
            emit(dict(rec, status=c.error))
            log(f"{c.name}: {c.error}")
            continue
        if args.deadline and time.time() > args.deadline:
            emit(dict(rec, status="skipped (budget)"))
            log(f"{c.name}: skipped (budget)")
            continue
        try:
            a = c.make_args()
            t = time.perf_counter()
            out = jax.block_until_ready(c.compiled(*a))
            first_s = time.perf_counter() - t
            for _ in range(args.warmup):
                if c.update:
                    a = c.update(a, out)
                out = jax.block_until_ready(c.compiled(*a))
            times, t_case = [], time.perf_counter()
            while len(times) < c.n_max:
                if c.update:
                    a = c.update(a, out)
                t = time.perf_counter()
                out = jax.block_until_ready(c.compiled(*a))
                times.append(time.perf_counter() - t)
                if len(times) >= 2 and time.perf_counter() - t_case > args.case_seconds:
                    break
            if args.profile == c.name:
                rec["profile"], a, out = profile(c, a, out, args)
            if c.update:
                a = c.update(a, out)
            extra = c.finish(a, out) if c.finish else {}
            del a, out
            med = sorted(times)[len(times) // 2]
            peak, in_use = mem_stats()
            rec.update(ms=med * 1e3, img_s=c.batch / med, iters=len(times),
                       ms_min=min(times) * 1e3, first_call_s=first_s,
                       peak_gib=None if peak is None else peak / GIB,
                       plan_gib=None if plan_bytes(c.compiled) is None else plan_bytes(c.compiled) / GIB,
                       xla_tflop=None if xla_flops(c.compiled) is None else xla_flops(c.compiled) / 1e12,
                       **extra)
            if c.flops:
                rec["tflop_per_step"] = c.flops / 1e12
                rec["tflops"] = c.flops / med / 1e12
                rec["mfu"] = rec["tflops"] / args.peak_tflops if args.peak_tflops else None
            emit(rec)
            log(f"{c.name}: {med * 1e3:.1f} ms ({c.batch / med:.1f} img/s), compile "
                f"{c.compile_s:.1f}s" + (f", {rec['tflops']:.0f} TFLOP/s" if c.flops else ""))
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: record it, go on
            msg = f"error: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            emit(dict(rec, status=msg))
            log(f"{c.name}: {msg}")
            for k in list(holder):
                if holder[k] is not None and any(
                        getattr(x, "is_deleted", lambda: False)()
                        for x in jax.tree_util.tree_leaves(holder[k])):
                    holder[k] = None
        c.compiled = None
    if em_tok_dir:
        shutil.rmtree(em_tok_dir, ignore_errors=True)


def profile(c, a, out, args):
    """Three more calls under jax.profiler; the .xplane.pb is copied to --out (<= 16 MiB)."""
    import jax

    tmp = tempfile.mkdtemp(prefix="gvp_prof_")
    with jax.profiler.trace(tmp):
        for _ in range(3):
            if c.update:
                a = c.update(a, out)
            out = jax.block_until_ready(c.compiled(*a))
    files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
    if not files:
        return "no trace written", a, out
    dst = os.path.join(args.out, f"profile-{c.name.replace('@', '_')}.xplane.pb")
    shutil.copy(files[0], dst)
    shutil.rmtree(tmp, ignore_errors=True)
    mib = os.path.getsize(dst) / 2**20
    return f"{dst} ({mib:.1f} MiB; open with xprof / tensorboard-plugin-profile)", a, out


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


def run_torch(args, work, deadline):
    path = os.path.join(work, "torch.jsonl")
    depths = sorted({depth_of(m.split("-")[1]) for m in args.models.split(",") if m.startswith("var-")})
    if not depths:
        return []
    names = {depth_of(m.split("-")[1]): m.split("-")[1] for m in args.models.split(",")}
    batches = parse_map(args.batch)
    tk = {"train-tok": "train", "tokenise": "tokenise", "train-pretok": "train-pretok",
          "sample": "sample", "sample1": "sample1"}
    kinds = [tk[k] for k in args.cases.split(",") if k in tk]
    cmd = [args.torch_python, os.path.join(HERE, "torch_var_side.py"), "--var-dir", args.var_dir,
           "--jsonl", path, "--depths", ",".join(map(str, depths)),
           "--batch", ",".join(f"{d}={batches.get(names[d], 2)}" for d in depths),
           "--sample-batch", str(args.sample_batch), "--cases", ",".join(kinds),
           "--steps", str(args.steps), "--sample-steps", str(args.sample_steps),
           "--latency-steps", str(args.latency_steps), "--warmup", str(args.warmup),
           "--case-seconds", str(args.case_seconds), "--deadline", str(deadline)]
    if args.peak_tflops:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    if args.cpu_smoke:
        cmd += ["--smoke", "--device", "cpu"]
    if not os.path.isfile(os.path.join(args.var_dir, "models", "var.py")):
        log(f"PyTorch side skipped: {args.var_dir} is not a VAR checkout (see run_gpu.sh)")
        return []
    log("PyTorch side: " + " ".join(cmd))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None) if args.cpu_smoke else None
    try:
        subprocess.run(cmd, env=env, timeout=max(60.0, deadline - time.time() + 240.0),
                       check=False)
    except subprocess.TimeoutExpired:
        log("PyTorch side: killed at its time limit (partial results kept)")
    return read_jsonl(path)


def run_jax_group(args, work, group, deadline, hard_limit):
    path = os.path.join(work, f"jax-{group}.jsonl")
    argv = [a for a in sys.argv[1:]]
    cmd = [args.jax_python, os.path.abspath(__file__)] + argv + [
        "--worker", group, "--worker-jsonl", path, "--deadline", str(deadline)]
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if args.cpu_smoke:
        env["JAX_PLATFORMS"] = "cpu"
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


def pair_key(rec):
    return rec["case"]


def make_tables(args, torch_recs, jax_recs, meta):
    """Markdown: every case (PyTorch row, then ours), then the issue's targets."""
    pt = {r["case"]: r for r in torch_recs if "ms" in r}
    lines = []
    lines.append(f"Card: {meta['device']}. JAX {meta.get('jax', '?')}, torch {meta.get('torch', '?')}. "
                 f"Our levers: dtype {args.dtype}, attention {args.attention} (sampling "
                 f"{args.sample_attention}), scan {bool(args.scan)}, remat {args.remat}, "
                 f"tokenizer {args.tok_dtype}.")
    lines.append(f"Training FLOPs/step = {FLOP_FORMULA} (transformer only; L = 680 VAR, 1360 "
                 f"joint); MFU against {args.peak_tflops or '–'} TFLOP/s.")
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
    if len(tl) > 2:
        lines.append("Targets of issue 6 (same card, same run):")
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
            hard = max(120.0, end - time.time() + 240.0)
            jax_recs += run_jax_group(args, work, g, deadline, hard)
    meta = dict(date=time.strftime("%Y-%m-%d %H:%M"), argv=sys.argv[1:],
                device=next((r["device"] for r in jax_recs + torch_recs if "device" in r), "?"),
                jax=next((r["jax"] for r in jax_recs if "jax" in r), None),
                torch=next((r["torch"] for r in torch_recs if "torch" in r), None),
                flop_formula=FLOP_FORMULA, peak_tflops=args.peak_tflops,
                wall_s=time.time() - START)
    table = make_tables(args, torch_recs, jax_recs, meta)
    header = (f"## gpu_vs_pytorch {meta['date']}, {meta['device']}"
              + (" (CPU SMOKE: tiny shapes, not performance)" if args.cpu_smoke else "") + "\n\n"
              f"Command: `python benchmarks/gpu_vs_pytorch.py {' '.join(sys.argv[1:])}`\n\n")
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
    args = apply_modes(parser.parse_args(argv), vars(parser.parse_args([])))
    if args.worker:
        return worker_main(args) or 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
