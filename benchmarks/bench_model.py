"""VAR-mode transformer throughput: one training step and class-conditional sampling.

CPU (tiny shapes, what benchmarks/RESULTS.md records):
    .venv/bin/python benchmarks/bench_model.py --model tiny --batch 8 --sample-batch 8
GPU (issue 6 shapes; random weights, inputs given = pre-tokenised):
    python benchmarks/bench_model.py --model d16 --batch 64 --dtype bfloat16 --attention cudnn \
        --scan --sample-batch 64 --latency
    python benchmarks/bench_model.py --model d24 --batch 32 --dtype bfloat16 --attention cudnn \
        --scan --remat dots_no_batch --sample-batch 64 --latency

Training step = forward + backward + clip(2.0) + AdamW(0.9, 0.95, wd 0.05) on given inputs
(labels, teacher-forcing features x (B, L-1, Cvae), target tokens (B, L)), params and optimizer
state donated. No tokenizer in the step (see the tokenizer's own benchmark for that share).
FLOPs per training step (transformer only: 2 per weight and token for the 12·C² weights of
a layer and the C·V head, 4·L·C per token and layer for attention's two products; x3 with
the backward pass):
    3 · L · B · (2 · (12 · C² · depth + C · V) + 4 · L · C · depth)
MFU = achieved FLOP/s / --peak-tflops (default: 989 for H100/H200 dense bf16, none on CPU).

Sampling = VAR's autoregressive_infer_cfg as one jit: CFG 1.5 (2B rows), top-k 900 (capped at
V), top-p 0.96, fixed-size KV cache, optionally the VQ-VAE decode (random tokenizer weights of
VAR's architecture at the model's resolution). Reports img/s and tokens/s (B · L per call);
--latency adds batch-1 latency. The decode alone is timed too, to show its share.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from earthmapper_jax.models import var as var_lib
from earthmapper_jax.models.blocks import stack_block_params
from earthmapper_jax.sampling.var_sampler import sample_var_tokens

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def train_flops(L, B, C, depth, V):
    return 3 * L * B * (2 * (12 * C * C * depth + C * V) + 4 * L * C * depth)


def peak_memory_gib():
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def _timed(fn, *args, reps: int):
    """(first-call seconds incl. compile, mean seconds of `reps` further calls, last output)."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(reps):
        out = fn(*args)
    jax.block_until_ready(out)
    return first, (time.perf_counter() - t) / max(reps, 1), out


def _model_config(args):
    over = dict(dtype=args.dtype, attention=args.attention, sample_attention=args.sample_attention,
                scan_layers=args.scan, remat=args.remat)
    return var_lib.var_config(args.model, **over)


def bench_train(args, cfg, params):
    module = var_lib.build(cfg)
    L = sum(p * p for p in cfg.patch_nums)
    B = args.batch
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.integers(0, cfg.num_classes, B), jnp.int32)
    x = jnp.asarray(rng.normal(size=(B, L - 1, cfg.cvae)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, cfg.vocab_size, (B, L)), jnp.int32)
    opt = optax.chain(optax.clip_by_global_norm(2.0),
                      optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05))
    opt_state = opt.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, key):
        def loss_fn(p):
            logits = module.apply({"params": p}, labels, x, False, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key = jax.random.key(0)
    t = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, key)
    loss.block_until_ready()
    first = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(args.steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
    loss.block_until_ready()
    sec = (time.perf_counter() - t) / args.steps
    flops = train_flops(L, B, cfg.embed_dim, cfg.depth, cfg.vocab_size)
    tflops = flops / sec / 1e12
    peak = args.peak_tflops
    return dict(
        what="train step", batch=B, ms=sec * 1e3, img_s=B / sec, tokens_s=B * L / sec,
        tflop_per_step=flops / 1e12, tflops=tflops, mfu=None if not peak else tflops / peak,
        compile_s=first, peak_gib=peak_memory_gib(), loss=float(loss),
    )


def _tokenizer(cfg, args):
    from earthmapper_jax import tokenizer as tok_lib
    from earthmapper_jax.tokenizer.model import build as build_tok

    pn = tuple(cfg.patch_nums)
    if args.model == "tiny":
        tcfg = dict(ch=32, vocab_size=cfg.vocab_size, z_channels=cfg.cvae, image_size=128,
                    patch_nums=pn)
    else:
        tcfg = dict(vocab_size=cfg.vocab_size, z_channels=cfg.cvae, image_size=16 * pn[-1],
                    patch_nums=pn, dtype=args.dtype)
    return build_tok(tcfg), tok_lib.init_params(tcfg, jax.random.key(7))


def bench_sample(args, cfg, params, B, tok):
    module = var_lib.build(cfg, attention=cfg.sample_attention)
    tok_module, tok_params = tok
    L = sum(p * p for p in cfg.patch_nums)
    top_k = min(900, cfg.vocab_size)
    fn = jax.jit(functools.partial(
        sample_var_tokens, module, tok_module, top_k=top_k, more_smooth=False, guided=True,
        decode=args.decode))
    labels = jnp.arange(B, dtype=jnp.int32) % cfg.num_classes
    first, sec, out = _timed(fn, params, tok_params, labels, jax.random.key(0), jnp.float32(1.5),
                             jnp.float32(0.96), jnp.float32(1.0), reps=args.sample_reps)
    res = dict(what=f"sample B={B}" + (" +decode" if args.decode else ""), batch=B,
               ms=sec * 1e3, img_s=B / sec, tokens_s=B * L / sec, compile_s=first,
               peak_gib=peak_memory_gib())
    if args.decode:
        f_hat = jnp.zeros((B, cfg.patch_nums[-1], cfg.patch_nums[-1], cfg.cvae), jnp.float32)
        dec = jax.jit(lambda tp, f: tok_module.apply({"params": tp}, f, method="decode_fhat"))
        _, dsec, _ = _timed(dec, tok_params, f_hat, reps=args.sample_reps)
        res["decode_ms"] = dsec * 1e3
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny | d16 | d20 | d24 | d30 | d36")
    ap.add_argument("--batch", type=int, default=8, help="training batch")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--dtype", default="float32", help="compute dtype (params stay fp32)")
    ap.add_argument("--attention", default="auto", help="auto|xla|cudnn|einsum|None (training pass)")
    ap.add_argument("--sample-attention", default="xla", help="attention kernel for sampling")
    ap.add_argument("--scan", action="store_true", help="nn.scan over layers")
    ap.add_argument("--remat", default="none", help="none|full|dots|dots_no_batch")
    ap.add_argument("--sample-batch", type=int, default=8, help="0 skips sampling")
    ap.add_argument("--sample-reps", type=int, default=3)
    ap.add_argument("--latency", action="store_true", help="also batch-1 sampling latency")
    ap.add_argument("--no-decode", dest="decode", action="store_false",
                    help="sample tokens only (no VQ-VAE decode)")
    ap.add_argument("--no-train", dest="train", action="store_false")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="device peak for MFU (default from the device kind; none on CPU)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.attention == "None":
        args.attention = None
    dev = jax.devices()[0]
    if args.peak_tflops is None:
        args.peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in dev.device_kind), None)

    cfg = _model_config(args)
    L = sum(p * p for p in cfg.patch_nums)
    init_cfg = var_lib.var_config(args.model)  # init unrolled, fp32; re-layout below
    params = var_lib.init_params(init_cfg, jax.random.key(0))
    if args.scan:
        params = stack_block_params(params, cfg.depth)
    n_params = var_lib.param_count(params)
    print(f"# {datetime.date.today()} {dev.device_kind} ({jax.default_backend()}, "
          f"{platform.node()}), jax {jax.__version__}")
    print(f"# VAR {args.model}: depth {cfg.depth}, C {cfg.embed_dim}, L {L}, V {cfg.vocab_size}, "
          f"{n_params / 1e6:.1f}M params, dtype {cfg.dtype}, attention {cfg.attention}/"
          f"{cfg.sample_attention}, scan {cfg.scan_layers}, remat {cfg.remat}")
    results = []
    if args.train:
        results.append(bench_train(args, cfg, jax.tree_util.tree_map(jnp.array, params)))
    if args.sample_batch or args.latency:
        tok = _tokenizer(cfg, args)
        for B in ([args.sample_batch] if args.sample_batch else []) + ([1] if args.latency else []):
            results.append(bench_sample(args, cfg, params, B, tok))
    cols = ("what", "batch", "ms", "img_s", "tokens_s", "tflops", "mfu", "peak_gib", "compile_s",
            "decode_ms")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("–" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v)))
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), device=dev.device_kind, results=results), f, indent=2)
    return results


if __name__ == "__main__":
    main()
