"""The PyTorch anchor of issue 6: the official VAR (FoundationVision/VAR) timed on this machine.

Run by `benchmarks/gpu_vs_pytorch.py` in its own process (so PyTorch and JAX never hold the
GPU at the same time), with the Python that has torch (`--torch-python`). VAR is imported at
run time from a local checkout (`--var-dir`, never committed); nothing of it is copied here.

    python benchmarks/torch_var_side.py --var-dir third_party/VAR --jsonl out.jsonl [--smoke]

What is timed, per depth (random weights; VAR's own modules and optimiser wrapper):
  * train (tokenisation included), as VAR's trainer does it: `vae.img_to_idxBl(images)` and
    `quantize.idxBl_to_var_input` in fp32 (TF32 allowed, outside autocast), the VAR forward
    under bf16 autocast (`utils.amp_sc.AmpOptimizer(mixed_precision=2)`), cross-entropy with
    VAR's uniform 1/L token weights, backward, clip 2.0, fused AdamW (0.9, 0.95), weight decay
    0.05 on VAR's decayed group; plus the per-step argmax the trainer computes.
  * tokenise: the tokenisation part alone (VAR's "of which tokenising").
  * train-pretok: the same step fed with token maps (not in the anchor; for reference).
  * sample B (64 and 1): `autoregressive_infer_cfg(B, labels, cfg=1.5, top_k=900, top_p=0.96)`
    under bf16 autocast + inference_mode, VQ-VAE decode included.
With --amp none (gpu_vs_pytorch.py --cpu) everything runs in float32 without autocast and the
optimiser step is plain PyTorch (backward, clip_grad_norm_ 2.0, fused AdamW step, zero_grad):
what AmpOptimizer does without a scaler, so VAR's utils/ is not imported (a checkout of its
models/ and dist.py suffices).
Peak memory: torch.cuda.max_memory_allocated after reset_peak_memory_stats per case.
Each case is appended to --jsonl as one JSON object as soon as it is done.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import types


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] torch: {msg}", flush=True)


def train_flops(L, B, C, depth, V):
    """Transformer-only FLOPs of one training step (fwd + bwd); see gpu_vs_pytorch.py."""
    return 3 * L * B * (2 * (12 * C * C * depth + C * V) + 4 * L * C * depth)


def parse_map(text):
    return {int(k): int(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--var-dir", required=True, help="local checkout of FoundationVision/VAR")
    ap.add_argument("--jsonl", required=True, help="append one JSON line per case here")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU end-to-end check)")
    ap.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    ap.add_argument("--depths", default="16,24")
    ap.add_argument("--batch", default="16=64,24=32", help="training batch per depth")
    ap.add_argument("--sample-batch", type=int, default=64)
    ap.add_argument("--cases", default="train,tokenise,train-pretok,sample,sample1")
    ap.add_argument("--steps", type=int, default=8, help="timed training steps (at most)")
    ap.add_argument("--sample-steps", type=int, default=3, help="timed batch samplings (at most)")
    ap.add_argument("--latency-steps", type=int, default=10, help="timed batch-1 samplings")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--case-seconds", type=float, default=6.0,
                    help="stop a case's timed loop after this long (min 2 iterations)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="unix time after which no new case starts")
    ap.add_argument("--sample-amp", default="bf16", help="bf16 | fp16 | none (sampling autocast)")
    ap.add_argument("--amp", default="bf16", choices=("bf16", "none"),
                    help="training autocast: bf16 (VAR's AmpOptimizer) or none (fp32, no utils/)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    ap.add_argument("--profile", default="", help="case names: after timing, profile more calls")
    ap.add_argument("--profile-calls", type=int, default=1)
    ap.add_argument("--profile-dir", default=".", help="torch-CASE.json (key_averages) here")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="MFU denominator (default by card: H200 790, H100 798 TFLOP/s bf16)")
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    var_dir = os.path.abspath(args.var_dir)
    if not os.path.isfile(os.path.join(var_dir, "models", "var.py")):
        sys.exit(f"--var-dir {var_dir}: not a VAR checkout (no models/var.py)")
    sys.path.insert(0, var_dir)
    try:
        import huggingface_hub  # noqa: F401  (VAR's models/var.py imports it at module top)
    except ImportError:
        # VAR only mixes PyTorchModelHubMixin into VARHF for hub load/save, which is never
        # called here: an empty stand-in lets a torch-only Python import VAR's models/.
        sys.modules["huggingface_hub"] = types.SimpleNamespace(PyTorchModelHubMixin=type(
            "PyTorchModelHubMixin", (), {}))
    cwd = os.getcwd()
    os.chdir(var_dir)  # VAR's modules import `dist` etc. relative to the checkout
    from models import build_vae_var  # noqa: E402  (VAR's own code, imported at run time)
    if args.amp != "none":
        from utils.amp_sc import AmpOptimizer  # noqa: E402
    os.chdir(cwd)

    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev == "cuda"
    if cuda:  # VAR's arg_util defaults: --tf32=True, cudnn.benchmark (pg = 0), no determinism
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    else:  # a shared box: OpenMP threads spinning against other jobs cost 10-50x
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(args.threads)
    kind = torch.cuda.get_device_name() if cuda else "cpu"
    if args.peak_tflops is None and cuda:
        args.peak_tflops = next((v for k, v in {"H200": 790.0, "H100": 798.0}.items() if k in kind),
                                None)
    log(f"torch {torch.__version__}, device {kind}, VAR from {var_dir}, training amp "
        f"{args.amp}, sampling amp {args.sample_amp}"
        + ("" if cuda else f", {torch.get_num_threads()} thread(s)"))
    cases = set(args.cases.split(","))
    batches = parse_map(args.batch)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def reset_peak():
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib():
        return torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    def out_of_time():
        return args.deadline is not None and time.time() > args.deadline

    def emit(rec):
        rec.update(side="pytorch", device=kind, torch=torch.__version__)
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(rec) + "\n")
        ms = rec.get("ms")
        log(f"{rec['case']}: " + (f"{ms:.1f} ms" if ms else rec.get("status", "")))

    def timed(fn, n_max, warmup):
        for _ in range(warmup):
            fn()
        sync()
        times, t_case = [], time.perf_counter()
        while len(times) < n_max:
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
            if len(times) >= 2 and time.perf_counter() - t_case > args.case_seconds:
                break
        times.sort()
        return times[len(times) // 2], times

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[args.sample_amp]

    for depth in [int(d) for d in args.depths.split(",")]:
        if out_of_time():
            emit(dict(case=f"var-d{depth}", status="skipped (budget)"))
            continue
        if args.smoke:
            shape = dict(patch_nums=(1, 2, 3, 4, 6, 8), V=512, Cvae=8, ch=32, num_classes=10)
            image = 128
        else:
            shape = dict(patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), V=4096, Cvae=32, ch=160,
                         num_classes=1000)
            image = 256
        t0 = time.perf_counter()
        vae, var = build_vae_var(
            device=dev, patch_nums=shape["patch_nums"], V=shape["V"], Cvae=shape["Cvae"],
            ch=shape["ch"], share_quant_resi=4, num_classes=shape["num_classes"], depth=depth,
            shared_aln=False, attn_l2_norm=True, flash_if_available=True, fused_if_available=True,
        )
        # build_vae_var skips conv/norm init (it loads a checkpoint next): give the VQ-VAE sane
        # random weights (LeCun-normal convs, unit norms), as our side's random tokenizer has.
        with torch.no_grad():
            for m in vae.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    fan_in = m.weight[0].numel()
                    torch.nn.init.trunc_normal_(m.weight, std=1.0 / math.sqrt(fan_in))
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, torch.nn.GroupNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
        var.train()
        C, V = var.C, var.V
        L = sum(p * p for p in shape["patch_nums"])
        n_params = sum(p.numel() for p in var.parameters())
        build_s = time.perf_counter() - t0
        log(f"VAR-d{depth}: {n_params / 1e6:.1f}M params, built in {build_s:.1f}s")

        # VAR's optimiser: fused AdamW (0.9, 0.95), decayed / non-decayed groups (VAR trainer's
        # rule, below), clip 2.0, bf16 autocast without a scaler (mixed_precision=2).
        nowd = ("cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC",
                "pos_start", "start_pos", "lvl_embed", "gamma", "beta", "ada_gss", "moe_bias",
                "scale_mul")
        decay, no_decay, names, paras = [], [], [], []
        for name, p in var.named_parameters():
            names.append(name)
            paras.append(p)
            if p.ndim == 1 or name.endswith("bias") or any(k in name for k in nowd):
                no_decay.append(p)
            else:
                decay.append(p)
        groups = [dict(params=decay, weight_decay=0.05), dict(params=no_decay, weight_decay=0.0)]
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), fused=True)
        if args.amp == "none":
            amp_opt = None
            amp_ctx = torch.autocast(dev, enabled=False)
        else:
            amp_opt = AmpOptimizer(mixed_precision=2, optimizer=opt, names=names, paras=paras,
                                   grad_clip=2.0, n_gradient_accumulation=1)
            if not cuda:  # AmpOptimizer's context is CUDA autocast; the CPU smoke uses CPU's
                amp_opt.amp_ctx = torch.autocast("cpu", dtype=torch.bfloat16)
            amp_ctx = amp_opt.amp_ctx

        B = batches.get(depth, 2 if args.smoke else 32)
        g = torch.Generator(device=dev).manual_seed(0)
        images = torch.rand(B, 3, image, image, generator=g, device=dev) * 2 - 1
        labels = torch.randint(0, shape["num_classes"], (B,), generator=g, device=dev)
        loss_weight = torch.ones(1, L, device=dev) / L
        flops = train_flops(L, B, C, depth, V)
        base = dict(model=f"VAR-d{depth}", depth=depth, batch=B, L=L, params_m=n_params / 1e6,
                    tflop_per_step=flops / 1e12)

        def tokenise():
            gt_idx = vae.img_to_idxBl(images)
            return torch.cat(gt_idx, dim=1), vae.quantize.idxBl_to_var_input(gt_idx)

        def step_on(gt_BL, x_BLCv):
            with amp_ctx:
                logits = var(labels, x_BLCv)
                loss = F.cross_entropy(logits.view(-1, V), gt_BL.view(-1), reduction="none")
                loss = loss.view(B, -1).mul(loss_weight).sum(dim=-1).mean()
            if amp_opt is None:  # fp32: the AmpOptimizer step without a scaler, inline
                loss.backward()
                torch.nn.utils.clip_grad_norm_(paras, 2.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            else:
                amp_opt.backward_clip_step(stepping=True, loss=loss)
            logits.data.argmax(dim=-1)  # VAR's trainer computes the predictions every step
            return loss

        def record(case, fn, n, base, extra=None, flops_=None):
            if out_of_time():
                emit(dict(base, case=case, status="skipped (budget)"))
                return
            reset_peak()
            t = time.perf_counter()
            med, times = timed(fn, n, args.warmup)
            rec = dict(base, case=case, ms=med * 1e3, img_s=base["batch"] / med, iters=len(times),
                       peak_gib=peak_gib(), wall_s=time.perf_counter() - t)
            if flops_:
                rec["tflops"] = flops_ / med / 1e12
                rec["mfu"] = rec["tflops"] / args.peak_tflops if args.peak_tflops else None
                rec["peak_tflops"] = args.peak_tflops
            rec.update(extra or {})
            if case in args.profile.split(","):
                rec["profile"] = profile(case, fn)
            emit(rec)

        def profile(case, fn):
            """key_averages of --profile-calls calls: per op, self and total CPU time (us)."""
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(args.profile_calls):
                    fn()
            rows = [dict(name=e.key, count=e.count, self_us=e.self_cpu_time_total,
                         total_us=e.cpu_time_total) for e in prof.key_averages()]
            path = os.path.join(args.profile_dir, f"torch-{case}.json")
            with open(path, "w") as f:
                json.dump(dict(case=case, calls=args.profile_calls, ops=rows), f, indent=0)
            return path

        if "train" in cases:
            record(f"var-d{depth}-train-tok", lambda: step_on(*tokenise()), args.steps, base,
                   flops_=flops)
        if "tokenise" in cases:
            with torch.no_grad():
                record(f"var-d{depth}-tokenise", tokenise, args.steps, base)
        if "train-pretok" in cases:
            with torch.no_grad():
                gt_BL, x_BLCv = tokenise()
            record(f"var-d{depth}-train-pretok", lambda: step_on(gt_BL, x_BLCv), args.steps,
                   base, flops_=flops)
        del opt, amp_opt, groups, decay, no_decay, paras
        for p in var.parameters():
            p.grad = None
        var.eval()

        top_k = min(900, V)
        sample_batches = []
        if "sample" in cases:
            sample_batches.append((args.sample_batch, args.sample_steps))
        if "sample1" in cases:
            sample_batches.append((1, args.latency_steps))
        for SB, n in sample_batches:
            lab = torch.arange(SB, device=dev) % shape["num_classes"]

            def sample():
                ctx = torch.autocast(dev, dtype=amp_dtype) if amp_dtype else torch.autocast(dev, enabled=False)
                with torch.inference_mode(), ctx:
                    return var.autoregressive_infer_cfg(B=SB, label_B=lab, cfg=1.5, top_k=top_k,
                                                        top_p=0.96, g_seed=0, more_smooth=False)

            base_s = {k: v for k, v in base.items() if k != "tflop_per_step"}
            base_s["batch"] = SB
            record(f"var-d{depth}-sample-b{SB}", sample, n, base_s,
                   extra=dict(decode=True, cfg=1.5, top_k=top_k, top_p=0.96))
        del vae, var, images
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            log(f"after VAR-d{depth}: {torch.cuda.memory_allocated() / 2**30:.2f} GiB still allocated")


if __name__ == "__main__":
    main()
