"""`earthmapper reconstruct --tokenizer DIR IN OUT`: encode an image to tokens and decode it back.

Prints PSNR and SSIM of the reconstruction against the input. IN/OUT are images (PNG, JPEG,
...) or .npy float arrays (H, W, 3) in [-1, 1]. `--scales K` decodes only the first K token maps
(coarse-to-fine preview); `--resize` resizes an input of another size to the tokenizer's.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from earthmapper_jax.errors import InputError
from earthmapper_jax.io import images


def register(subparsers):
    p = subparsers.add_parser(
        "reconstruct", help="tokenize an image and decode it back (PSNR / SSIM)",
        description="Encode an image with a tokenizer, decode the tokens (optionally only the "
        "first K scales), write the result and print PSNR and SSIM against the input.",
    )
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory")
    p.add_argument("input", metavar="IN", help="RGB image (PNG/JPEG/...) or .npy (H, W, 3) in [-1, 1]")
    p.add_argument("output", metavar="OUT", help="reconstruction (.png/.jpg/... or .npy)")
    p.add_argument("--scales", type=int, default=None, metavar="K",
                   help="decode only the first K scales (default: all)")
    p.add_argument("--resize", action="store_true",
                   help="resize an input whose size differs from the tokenizer's image size")
    p.set_defaults(func=run)


def read_input(path) -> np.ndarray:
    """(H, W, 3) float32 in [-1, 1] from an RGB image file or a .npy array.

    Unlike translate, a grey or RGBA image is refused rather than converted: the PSNR / SSIM
    printed would otherwise score the tokenizer against an image the user did not give."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"{path}: not a readable .npy array ({e})") from None
        if a.ndim != 3 or a.shape[-1] != 3:
            raise InputError(f"{path}: array has shape {a.shape}, expected (H, W, 3) RGB in [-1, 1]")
        return a.astype(np.float32)
    pixels = images.read_image(path)
    with Image.open(path) as im:  # header only: the mode decode_image converted from
        mode, bands = im.mode, len(im.getbands())
    if mode != "RGB":
        raise InputError(
            f"{path}: image has {bands} channel{'s' * (bands != 1)} ({mode}), expected 3 (RGB)")
    return images.to_float(pixels)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of a float image, channel by channel (a .npy input has no 8-bit form)."""
    chans = [Image.fromarray(img[..., c]).resize((size, size), Image.BICUBIC) for c in range(3)]
    return np.clip(np.stack([np.asarray(c) for c in chans], -1), -1, 1).astype(np.float32)


def run(args):
    from earthmapper_jax.tokenizer import load
    from earthmapper_jax.tokenizer.image_metrics import psnr, ssim

    out_dir = pathlib.Path(args.output).parent
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: output directory does not exist")
    x = read_input(args.input)
    tok = load(args.tokenizer)
    s, k = tok.image_size, len(tok.patch_nums)
    if args.scales is not None and not 1 <= args.scales <= k:
        raise InputError(f"--scales must be in 1..{k} (this tokenizer has {k} scales), got {args.scales}")
    if x.shape[:2] != (s, s):
        if not args.resize:
            raise InputError(
                f"{args.input}: image is {x.shape[1]}x{x.shape[0]}, the tokenizer expects {s}x{s} "
                "(pass --resize to resize it)")
        x = _resize(x, s)
    rec = np.asarray(tok.reconstruct(x[None], num_scales=args.scales))
    p = float(psnr(rec, x[None])[0])
    q = float(ssim(rec, x[None])[0])
    images.write_image(args.output, rec[0])
    used = k if args.scales is None else args.scales
    print(f"wrote {args.output} (scales 1-{used} of {k}, patch_nums {list(tok.patch_nums[:used])}): "
          f"PSNR {p:.2f} dB, SSIM {q:.4f}")
    return 0
