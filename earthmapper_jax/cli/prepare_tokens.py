"""`earthmapper prepare tokens --tokenizer DIR DATA OUT`: pre-tokenise a TFRecord dataset.

Stores both modalities' token maps (and, with --si-dinov2, Semantic Infusion targets)
for every split, once per augmentation variant (earthmapper_jax/pretokenize.py; the files:
earthmapper_jax/data/token_records.py). Train on them with `--config.data.tokens_dir=OUT`.
"""


def register(subparsers):
    p = subparsers.add_parser(
        "tokens", help="pre-tokenise a dataset for EarthMapper training (frozen tokenizer)",
        description=__doc__)
    p.add_argument("data", metavar="DATA", help="TFRecord dataset directory (earthmapper prepare)")
    p.add_argument("out", metavar="OUT", help="output directory for the token arrays")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory")
    p.add_argument("--splits", default="", help="comma-separated splits (default: all)")
    p.add_argument("--variants", default="auto",
                   choices=("auto", "none", "hflip", "rot90", "dihedral"),
                   help="augmentation variants to store; auto = measure whether tokens commute "
                        "with flips/rotations and store all 8 if they do not (default)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--si-dinov2", default="", metavar="PTH",
                   help="official DINOv2 .pth: also store Semantic Infusion target grids")
    p.add_argument("--si-target", default="reconstruction", choices=("reconstruction", "image"),
                   help="SI targets: DINOv2 of the image decoded from the tokens of scales 1..k, "
                        "per scale (the paper, Eq. 13; K decodes per image) or of the real image "
                        "(one pass, cheaper); must match config.model.si_target")
    p.add_argument("--si-image-size", type=int, default=224)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def main(args):
    from earthmapper_jax.pretokenize import prepare_tokens

    dinov2 = None
    if args.si_dinov2:
        from earthmapper_jax.models.dinov2 import load_dinov2

        dinov2 = load_dinov2(args.si_dinov2)
    splits = [s for s in args.splits.split(",") if s]
    out = prepare_tokens(args.tokenizer, args.data, args.out, splits=splits or None,
                         variants=args.variants, batch_size=args.batch_size, dinov2=dinov2,
                         si_image_size=args.si_image_size, si_target=args.si_target, overwrite=args.overwrite,
                         progress=not args.quiet)
    for split, m in out.items():
        worst = min((v["agreement"] for v in (m["commutation"] or {}).values()), default=1.0)
        print(f"{split}: {m['num_records']} pairs x {len(m['variants'])} variant(s) "
              f"({', '.join(m['variant_names'])}); flip/rotation agreement of tokens "
              f">= {worst:.1%} -> {args.out}")
    return 0
