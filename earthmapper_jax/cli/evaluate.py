"""`earthmapper evaluate`: the paper's Table I protocol on a split, as one command.

    earthmapper evaluate --checkpoint RUN/model --data DATA --split test --direction both \\
        --inception-weights pt_inception-2015-12-05-6726825d.pth \\
        --lpips-backbone alexnet-owt-7be5be79.pth --lpips-weights alex.pth --out EVAL/
    earthmapper evaluate --generated BASELINE_OUT/ --data DATA --split test ... --out EVAL_B/

Writes EVAL/metrics.json, EVAL/table.md, EVAL/samples.png, the generated tiles
(EVAL/generated/<direction>/<tile>.png) and per-batch records (EVAL/records/) from which
`--resume` continues an interrupted run. The protocol and every choice: docs/evaluation.md.
The loop is earthmapper_jax/evaluation/run.py.
"""

from __future__ import annotations

from earthmapper_jax.cli import sampling_args
from earthmapper_jax.errors import InputError

def register(subparsers):
    p = subparsers.add_parser(
        "evaluate", help="score a model (or another method's outputs) on a split: FID, KID, "
                         "precision/recall, SSIM, PSNR, RMSE, LPIPS",
        description="Translate a split and score it as the paper's Table I does.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="DIR", help="EarthMapper model directory")
    src.add_argument("--generated", metavar="DIR",
                     help="score these outputs instead: DIR/<direction>/<tile_id>.png or "
                          "DIR/<tile_id>_<map|sat>.png (earthmapper translate's names)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset directory (TFRecord splits)")
    p.add_argument("--split", default="test")
    p.add_argument("--direction", default="both", choices=("sat2map", "map2sat", "both"))
    p.add_argument("--out", required=True, metavar="DIR", help="evaluation folder (created)")
    p.add_argument("--resume", action="store_true", help="continue the evaluation in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the evaluation in --out")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N tiles")
    p.add_argument("--batch-size", type=int, default=8, help="rounded up to a multiple of the devices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inception-weights", metavar="PTH",
                   help="pytorch-fid's FID Inception weights (pt_inception-2015-12-05-6726825d.pth)")
    p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"))
    p.add_argument("--lpips-backbone", metavar="PTH",
                   help="torchvision's ImageNet weights of the LPIPS backbone "
                        "(alexnet-owt-7be5be79.pth / vgg16-397923af.pth)")
    p.add_argument("--lpips-weights", metavar="PTH",
                   help="the lpips package's v0.1 linear heads (weights/v0.1/alex.pth or vgg.pth)")
    p.add_argument("--no-lpips", action="store_true", help="leave the LPIPS column empty")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="real-image feature cache (default EVAL/cache)")
    p.add_argument("--quiet", action="store_true", help="no progress reports")
    # Sampling: the same flags as `earthmapper translate`; unset = the model's config, else the
    # sampler's defaults (the paper's guidance triple per direction).
    sampling_args.add_sampling_options(p.add_argument_group("sampling"))
    p.set_defaults(func=run)


def run(args):
    from earthmapper_jax.evaluation.run import EXTRAS, Request, evaluate

    if args.resume and args.overwrite:
        raise InputError("--resume continues an evaluation, --overwrite replaces it: give one")
    directions = ("sat2map", "map2sat") if args.direction == "both" else (args.direction,)
    req = Request(data=args.data, split=args.split, out=args.out, directions=directions,
                  checkpoint=args.checkpoint, generated=args.generated, seed=args.seed,
                  batch_size=args.batch_size, limit=args.limit, sampling=sampling_args.sampler_options(args),
                  inception_weights=args.inception_weights, lpips_backbone=args.lpips_backbone,
                  lpips_weights=args.lpips_weights, lpips_net=args.lpips_net,
                  no_lpips=args.no_lpips, cache_dir=args.cache_dir, resume=args.resume,
                  overwrite=args.overwrite, progress=not args.quiet, extras=EXTRAS)
    metrics = evaluate(req)
    labels = {"map2sat": (("FID", "fid"), ("KID x100", "kid_scaled"), ("precision", "precision"),
                          ("recall", "recall")),
              "sat2map": (("SSIM", "ssim"), ("PSNR", "psnr"), ("RMSE", "rmse"), ("LPIPS", "lpips"))}
    for d in directions:
        m = metrics[d]
        vals = ", ".join(f"{name} {m[k]:.4g}" for name, k in labels[d] if k in m)
        print(f"{d} ({m['split']}, {m['n']} tiles): {vals}")
    print(f"wrote {args.out}/metrics.json, table.md, samples.png")
    return 0
