"""`earthmapper reconstruct --tokenizer DIR IN OUT`: encode an image to tokens and decode it back.

Prints PSNR and SSIM of the reconstruction against the input. IN/OUT are images (PNG, JPEG,
...) or .npy float arrays (H, W, 3) in [-1, 1]. `--scales K` decodes only the first K token maps
(coarse-to-fine preview); `--resize` resizes an input of another size to the tokenizer's.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np

from earthmapper_jax.errors import InputError


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


def read_image(path) -> np.ndarray:
    """(H, W, 3) float32 in [-1, 1] from an image file or a .npy array (InputError if not RGB)."""
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
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode, img = im.mode, im.copy()
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None
    if mode != "RGB":
        bands = len(img.getbands())
        raise InputError(
            f"{path}: image has {bands} channel{'s' * (bands != 1)} ({mode}), expected 3 (RGB)")
    return np.asarray(img, np.float32) / 127.5 - 1.0


def write_image(path, img: np.ndarray) -> None:
    """Writes (H, W, 3) in [-1, 1] atomically (temp file in the same directory, then rename)."""
    path = pathlib.Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: output directory does not exist")
    suffix = path.suffix.lower()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".png", dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".npy":
            np.save(tmp, img.astype(np.float32))
        else:
            from PIL import Image

            pixels = np.clip(np.round((img + 1.0) * 127.5), 0, 255).astype(np.uint8)
            try:
                Image.fromarray(pixels).save(tmp, format=Image.registered_extensions().get(suffix))
            except (KeyError, ValueError) as e:
                raise InputError(f"{path}: cannot write this image format ({e})") from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    chans = [Image.fromarray(img[..., c]).resize((size, size), Image.BICUBIC) for c in range(3)]
    return np.clip(np.stack([np.asarray(c) for c in chans], -1), -1, 1).astype(np.float32)


def run(args):
    from earthmapper_jax.tokenizer import load
    from earthmapper_jax.tokenizer.image_metrics import psnr, ssim

    x = read_image(args.input)
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
    write_image(args.output, rec[0])
    used = k if args.scales is None else args.scales
    print(f"wrote {args.output} (scales 1-{used} of {k}, patch_nums {list(tok.patch_nums[:used])}): "
          f"PSNR {p:.2f} dB, SSIM {q:.4f}")
    return 0
