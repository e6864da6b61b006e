"""`earthmapper convert WHAT SRC DST`: official PyTorch checkpoints -> model directories.

    earthmapper convert var-vae vae_ch160v4096z32.pth tokenizer_dir      (the tokenizer)
    earthmapper convert var var_d16.pth var_d16_dir --tokenizer tokenizer_dir

Each WHAT is one parser of the `convert` subparsers, added by a `_register_<what>` function
below and run by its `run_<what>`; the conversion logic lives in the library (importable
without the CLI).
"""

from __future__ import annotations

from earthmapper_jax.errors import InputError


def register(subparsers):
    parser = subparsers.add_parser(
        "convert", help="convert official PyTorch checkpoints (VAR tokenizer / transformer)",
        description="Convert official PyTorch checkpoints into model directories.",
    )
    sub = parser.add_subparsers(dest="what", metavar="WHAT")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    _register_var_vae(sub)
    _register_var(sub)


def _register_var_vae(sub):
    p = sub.add_parser(
        "var-vae", help="VAR VQ-VAE vae_ch160v4096z32.pth -> tokenizer directory",
        description="Convert VAR's multi-scale VQ-VAE checkpoint. The architecture is read from "
        "the tensor shapes; every tensor must be used and fit.",
    )
    p.add_argument("src", metavar="SRC.pth", help="VAR VQVAE state_dict (read with weights_only)")
    p.add_argument("dst", metavar="DST_DIR", help="output tokenizer directory")
    p.add_argument("--image-size", type=int, default=256,
                   help="image size the tokenizer serves (default 256; VAR also uses 512)")
    p.add_argument("--patch-nums", default=None, metavar="1,2,...",
                   help="token-map sizes per scale, comma-separated; the last must be "
                   "image_size / 16 (default: VAR's set for 256 or 512)")
    p.add_argument("--overwrite", action="store_true", help="replace DST_DIR if it exists")
    p.set_defaults(func=run_var_vae)


def run_var_vae(args):
    from earthmapper_jax.tokenizer.convert import convert_var_vae

    patch_nums = None
    if args.patch_nums:
        try:
            patch_nums = tuple(int(v) for v in args.patch_nums.split(",") if v.strip())
        except ValueError:
            raise InputError(
                f"--patch-nums must be comma-separated integers, got {args.patch_nums!r}") from None
    cfg = convert_var_vae(args.src, args.dst, image_size=args.image_size,
                          patch_nums=patch_nums, overwrite=args.overwrite)
    print(f"wrote {args.dst}: VQ-VAE ch {cfg['ch']} x {list(cfg['ch_mult'])}, z {cfg['z_channels']}, "
          f"vocabulary {cfg['vocab_size']}, image {cfg['image_size']}, "
          f"patch_nums {list(cfg['patch_nums'])}")
    return 0


def _register_var(sub):
    p = sub.add_parser(
        "var", help="VAR transformer var_d16..d36.pth -> model directory (VAR mode)",
        description="Convert a released VAR transformer checkpoint (var_d16 ... var_d36.pth). "
        "attn_l2_norm and shared AdaLN are detected from the keys; every key must be used.",
    )
    p.add_argument("src", metavar="SRC.pth", help="VAR state_dict (read with weights_only)")
    p.add_argument("dst", metavar="DST_DIR", help="output model directory")
    p.add_argument("--tokenizer", required=True, metavar="DIR",
                   help="converted tokenizer directory (earthmapper convert var-vae)")
    p.add_argument("--link-tokenizer", action="store_true",
                   help="store only a reference to --tokenizer instead of copying it")
    p.add_argument("--overwrite", action="store_true", help="replace DST_DIR if it exists")
    p.set_defaults(func=run_var)


def run_var(args):
    from earthmapper_jax.io.checkpoint import read_config
    from earthmapper_jax.models.convert_var import convert_var_checkpoint

    out = convert_var_checkpoint(
        args.src, args.dst, args.tokenizer, copy_tokenizer=not args.link_tokenizer,
        overwrite=args.overwrite,
    )
    cfg = read_config(out)["config"]
    print(
        f"wrote {out}: VAR depth {cfg['depth']}, width {cfg['embed_dim']}, "
        f"attn_l2_norm={cfg['attn_l2_norm']}, shared_aln={cfg['shared_aln']}, "
        f"{cfg['num_classes']} classes, vocabulary {cfg['vocab_size']}"
    )
    return 0
