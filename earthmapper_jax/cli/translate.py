"""`earthmapper translate`: satellite -> map or map -> satellite for image files and folders.

    earthmapper translate --checkpoint RUN_DIR --direction sat2map tiles/ extra.png --out maps/

Every input image (PNG/JPEG/TIFF/BMP/WebP; a folder contributes its images, not recursively)
must be a square RGB tile; it is resized to the tokenizer's size if needed. Each output is
OUT/<name>_<target>.png at the tokenizer's size, written atomically. Coordinates
(--coords LAT,LON) apply to every tile; without them the null coordinate is used.
"""

from __future__ import annotations

import pathlib

import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.io import images
from earthmapper_jax.progress import progress


def register(subparsers):
    p = subparsers.add_parser(
        "translate", help="translate satellite tiles to maps or maps to satellite tiles",
        description="Translate image files or folders with a trained EarthMapper checkpoint.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders of images")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="EarthMapper (or pix2pix) model directory")
    p.add_argument("--direction", required=True, help="sat2map or map2sat")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--coords", default=None, metavar="LAT,LON",
                   help="tile coordinates in degrees (negative first value: --coords=-33.9,151.2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", default=None, metavar="T1,T2,T3",
                   help="guidance triple (default: the paper's triple for the direction)")
    p.add_argument("--guidance-form", default="nested", choices=("nested", "independent"),
                   help="nested: ControlVAR's chain, equal triples = plain CFG (default); "
                        "independent: one summed term per condition (docs/guidance.md)")
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--top-p", type=float, default=0.55)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--kpf-tau", type=float, default=0.95,
                   help="Key Point Force threshold τ (default 0.95, the sampler's; docs/guidance.md)")
    p.add_argument("--no-kpf", action="store_true", help="switch Key Point Force off")
    p.add_argument("--no-complexity", action="store_true", help="plain linear CFG ramp")
    p.add_argument("--bf16", action="store_true", help="sample in bfloat16")
    p.set_defaults(func=run)


def _float_list(text: str, n: int, what: str):
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n:
        raise InputError(f"{what} {text!r}: expected {n} comma-separated numbers")
    return vals


def list_images(inputs) -> list[pathlib.Path]:
    """Files as given, folders expanded to their image files (sorted)."""
    out = []
    for item in inputs:
        path = pathlib.Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{path}: folder has no images ({', '.join(images.IMAGE_SUFFIXES)})")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return out


def run(args):
    import jax

    import earthmapper_jax
    from earthmapper_jax.sampling import TRANSLATORS, translate
    from earthmapper_jax.sampling.earthmapper_sampler import DIRECTIONS

    if args.direction not in DIRECTIONS:
        raise InputError(f"unknown direction {args.direction!r}; expected one of {sorted(DIRECTIONS)}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    files = list_images(args.inputs)
    coords = _float_list(args.coords, 2, "--coords") if args.coords else None
    guidance = _float_list(args.guidance, 3, "--guidance") if args.guidance else None
    model = earthmapper_jax.load(args.checkpoint)
    if model.mode not in TRANSLATORS:
        raise InputError(f"{args.checkpoint}: a {model.mode!r} checkpoint; translate needs an "
                         "EarthMapper or pix2pix one")
    # pix2pix: no tokenizer, its own size, none of the token sampler's options
    size = model.tokenizer.image_size if model.tokenizer is not None else int(model.config.image_size)
    target = DIRECTIONS[args.direction][1]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = jax.random.key(args.seed)
    options = dict(guidance=guidance, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
                   kpf_tau=None if args.no_kpf else args.kpf_tau, guidance_form=args.guidance_form,
                   complexity=not args.no_complexity,
                   dtype="bfloat16" if args.bf16 else None)
    if model.mode == "pix2pix":
        options = {}
    with progress(len(files), desc=f"translate {args.direction}", unit="tile") as bar:
        for start in range(0, len(files), args.batch_size):
            chunk = files[start : start + args.batch_size]
            tiles = np.stack([images.to_float(images.read_image(f, size, square=True))
                              for f in chunk])
            n = len(chunk)
            if n < args.batch_size:  # pad the last batch: one compiled shape for the whole run
                tiles = np.concatenate([tiles, np.repeat(tiles[-1:], args.batch_size - n, 0)])
            c = None if coords is None else np.tile(np.asarray(coords, np.float32), (len(tiles), 1))
            _, outs = translate(model, tiles, args.direction, jax.random.fold_in(rng, start),
                                coords=c, **options)
            outs = np.asarray(outs)
            for f, img in zip(chunk, outs[:n]):
                images.write_image(out / f"{f.stem}_{target}.png", img)
            bar.update(n)
    print(f"wrote {len(files)} {target} tile(s) to {out}")
    return 0
