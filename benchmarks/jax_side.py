"""The JAX side of issue 6's benchmark: one model group's cases in one process.

Started by `benchmarks/gpu_vs_pytorch.py` (which documents the cases, the FLOP formula and the
flags) once per group (var-d16, var-d24, em-d16, em-d24, or *-tiny for the CPU smoke), with the
orchestrator's own arguments plus --worker GROUP --worker-jsonl PATH --deadline T:

    python benchmarks/jax_side.py [gpu_vs_pytorch flags] --worker var-d16 --worker-jsonl x.jsonl

Each process owns the device alone, so the device's peak_bytes_in_use is that group's. Programs
are lowered in turn and compiled concurrently (XLA compiles without the GIL), then run one
after the other; each case appends one JSON object to --worker-jsonl when it is done.
Parameters are random, filled from abstract shapes (jax.eval_shape of module.init), so no
initialisation program is compiled; they are not VAR's init distribution, which does not
change the work done.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_vs_pytorch import (  # noqa: E402  (the orchestrator: flags, FLOP formula, log)
    GIB,
    LEVER_KEYS,
    apply_modes,
    build_parser,
    depth_of,
    log,
    parse_map,
    peak_for,
    train_flops,
)


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
    lower_s: Optional[float] = None
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
    from earthmapper_jax.models.dinov2 import VARIANTS as DINOV2_VARIANTS
    from earthmapper_jax.models import var as var_lib
    from earthmapper_jax.sampling import earthmapper_sampler as ems
    from earthmapper_jax.sampling import guidance as G
    from earthmapper_jax.sampling.var_sampler import sample_var_tokens
    from earthmapper_jax.scales import flatten_tokens
    from earthmapper_jax.tokenizer.model import build as build_tok
    from earthmapper_jax.train import earthmapper_task as emt
    from earthmapper_jax.train import optim

    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    group = args.worker
    mode, size = group.split("-")
    depth = depth_of(size)
    dev = jax.devices()[0]
    log(f"jax {jax.__version__} on {dev.device_kind} ({jax.default_backend()}): group {group}")
    peak = peak_for(dev.device_kind, args.peak_tflops) if dev.platform == "gpu" else args.peak_tflops or None
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
                    sample_scan=bool(args.scan if args.sample_scan is None else args.sample_scan),
                    remat=args.remat, tok_dtype=args.tok_dtype)

    def parse_variant(text):
        """NAME:key=val,...[|case,case] -> (name, settings, case names or None = --variant-cases)."""
        name, _, rest = text.partition(":")
        kvs, _, only = rest.partition("|")
        s = base_settings()
        for kv in filter(None, kvs.split(",")):
            k, v = kv.split("=")
            if k not in LEVER_KEYS:
                raise SystemExit(f"--variant {text!r}: unknown lever {k!r}; expected {LEVER_KEYS}")
            s[k] = bool(int(v)) if k in ("scan", "sample_scan") else (None if v == "None" else v)
        return name, s, (set(filter(None, only.split(","))) or None)

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
            over["scan_layers"] = s["sample_scan"]
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
        # shapes only; the xla path keeps a fused-kernel check (cuDNN) out of it
        return jax.eval_shape(module.clone(attention="xla").init, key0, *dummy)["params"]

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
        layout = ("train", s["sample_scan"])  # the training layout of that scan setting
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
        var_ = DINOV2_VARIANTS[mc.si_encoder]
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
            frozen = emt.Frozen.of(tparams, tokenizer(s["tok_dtype"])[0])
            (loss, aux), grads = jax.value_and_grad(emt.loss_fn, has_aux=True)(
                params, batch, key, {"model": mc}, frozen)
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
        spec_kw = dict(roles=tuple(roles), branches=("full",) + G.needed_branches(w, True),
                       top_k=int(o["top_k"]), complexity=bool(o["complexity"]), kpf=False,
                       decode=True)
        if "lead" in {f.name for f in dataclasses.fields(ems.Spec)}:
            # as earthmapper_sampler._run: a directed model's condition half leads each scale
            spec_kw["lead"] = sm if float(mc.get("directed_rate", 0.0)) > 0 else None
        spec = ems.Spec(**spec_kw)
        knobs = {"weights": jnp.asarray(w, jnp.float32), "gamma": jnp.float32(o["gamma"]),
                 "alpha_power": jnp.float32(o["alpha_power"]),
                 "beta_min": jnp.float32(o["beta_min"]), "tau": jnp.float32(2.0),
                 "top_p": jnp.float32(o["top_p"]), "temperature": jnp.float32(o["temperature"])}

        def fn(params, tparams, coords, images, rng, knobs):
            tp = {"params": tparams}
            src_tokens = flatten_tokens(tok_mod.apply(tp, images, method="encode"))
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
            if kind == "sat2map1" and size not in ("d16", "tiny") and only is None:
                continue  # batch-1 translation latency: d16 only by default (compile budget)
            if want(kind, name):
                out.append(make(name + suffix))
        return out

    cases = group_cases(base_settings())
    vcases = set(filter(None, args.variant_cases.split(",")))
    for text in args.variant:
        vname, s, only = parse_variant(text)
        cases += group_cases(s, only=only or vcases, suffix=f"@{vname}")
    log(f"{group}: {len(cases)} cases: {', '.join(c.name for c in cases)}")

    # ---- compile: lower in turn (tracing holds the GIL), compile concurrently

    def lower(c):
        t = time.perf_counter()
        try:
            lowered = jax.jit(c.fn, donate_argnums=c.donate).lower(*c.abstract)
        except Exception as e:  # noqa: BLE001 - recorded per case, the group goes on
            c.error = f"lowering failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            return None, 0.0
        c.lower_s = time.perf_counter() - t
        return lowered, c.lower_s

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

    t_compile = time.perf_counter()
    items = []
    for c in cases:
        if args.deadline and time.time() > args.deadline:
            c.error = "skipped (budget)"
            continue
        lowered, s = lower(c)
        items.append((c, lowered, s))
        log(f"{c.name}: lowered in {s:.1f}s")
    if args.lower_only:
        return
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
                   settings=c.settings, compile_s=c.compile_s, lower_s=c.lower_s)
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
            if c.name in (args.profile or "").split(","):
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
                rec["mfu"] = rec["tflops"] / peak if peak else None
                rec["peak_tflops"] = peak
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
    """--profile-calls more calls under jax.profiler; the .xplane.pb is copied to --out (<= 16
    MiB), with the optimised HLO beside it (hlo-CASE.txt: the fused computations' contents and
    source metadata that benchmarks/cpu_profile.py uses to put each op in a category)."""
    import jax

    with open(os.path.join(args.out, f"hlo-{c.name.replace('@', '_')}.txt"), "w") as f:
        f.write(c.compiled.as_text())
    tmp = tempfile.mkdtemp(prefix="gvp_prof_")
    with jax.profiler.trace(tmp):
        for _ in range(args.profile_calls):
            if c.update:
                a = c.update(a, out)
            out = jax.block_until_ready(c.compiled(*a))
    files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
    if not files:
        return "no trace written", a, out
    dst = os.path.join(args.out, f"profile-{c.name.replace('@', '_')}.xplane.pb")
    if os.path.getsize(files[0]) > 15 * 2**20:  # the device tool returns files up to 16 MiB
        import gzip

        dst += ".gz"
        with open(files[0], "rb") as fi, gzip.open(dst, "wb") as fo:
            shutil.copyfileobj(fi, fo)
    else:
        shutil.copy(files[0], dst)
    shutil.rmtree(tmp, ignore_errors=True)
    mib = os.path.getsize(dst) / 2**20
    return f"{dst} ({mib:.1f} MiB; open with xprof / tensorboard-plugin-profile)", a, out


def main(argv=None):
    parser = build_parser()
    args = apply_modes(parser.parse_args(argv), vars(parser.parse_args([])))
    if not args.worker or not args.worker_jsonl:
        raise SystemExit("jax_side.py is started by gpu_vs_pytorch.py (needs --worker, --worker-jsonl)")
    worker_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
