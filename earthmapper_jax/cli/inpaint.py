"""`earthmapper inpaint`: regenerate a region of satellite tiles or maps, keeping the rest.

    earthmapper inpaint tile.png --modality sat --box 8,8,24,24 --checkpoint MODEL --out edits/
    earthmapper inpaint tile.png --modality map --mask hole.png --condition sat.png ...

--box x0,y0,x1,y1: the region to regenerate, in pixels of the input image (x to the right, y
down, x1 and y1 exclusive); it must lie inside the image. --mask MASK.png: an image of the
input's size, white (255) = regenerate, black (0) = keep, nothing else. --condition OTHER: an
image of the other modality, kept as is (e.g. repaint a satellite region under a known map;
one input image only); without it the other modality is generated along. Outputs
OUT/<name>_<modality>_inpaint.png; `earthmapper outpaint` (cli/outpaint.py) keeps a box and
regenerates the border. Coordinates per tile and the output machinery: cli/sampling_run.py.
"""

from __future__ import annotations

import numpy as np

from earthmapper_jax.cli import sampling_args, sampling_run
from earthmapper_jax.errors import InputError
from earthmapper_jax.io import images

MODALITIES = ("sat", "map")


def register(subparsers):
    p = subparsers.add_parser("inpaint", help="regenerate a box or a masked region of tiles",
                              description=__doc__.split("\n\n")[0])
    add_painting_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--box", metavar="X0,Y0,X1,Y1", help="region to regenerate, in input pixels")
    g.add_argument("--mask", metavar="MASK.png", help="white = regenerate, black = keep")
    p.set_defaults(func=run)


def add_painting_args(p):
    """Inputs and options in-painting and out-painting share."""
    p.add_argument("inputs", nargs="*", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--modality", required=True, help="what the inputs are: sat or map")
    p.add_argument("--condition", default=None, metavar="OTHER_IMAGE",
                   help="an image of the other modality to keep fixed (one input image only)")
    sampling_args.add_model_options(p)
    sampling_args.add_tile_coords_options(p)


def box_region(box, shape, flag: str, where: str):
    """Pixel box (x0, y0, x1, y1) inside an image of (h, w) -> fractions (y0, x0, y1, x1)."""
    h, w = shape
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise InputError(f"{where}: {flag} {x0},{y0},{x1},{y1} lies outside the {w}x{h} image")
    return y0 / h, x0 / w, y1 / h, x1 / w


def read_mask(path) -> np.ndarray:
    """(H, W) bool generate-mask from a black/white image (InputError if not binary)."""
    px = images.read_image(path)
    if not (px == px[..., :1]).all() or not np.isin(px, (0, 255)).all():
        raise InputError(f"--mask {path}: not a binary mask (expected only black 0 = keep and white "
                         "255 = regenerate)")
    return px[..., 0] == 255


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) bool mask to (size, size)."""
    h, w = mask.shape
    return mask[(np.arange(size) * h // size)[:, None], (np.arange(size) * w // size)[None, :]]


def run(args):
    from earthmapper_jax.sampling.inpaint_masks import box_mask

    if args.box:
        box = sampling_args.parse_box(args.box, "--box")
        return run_painting(args, "inpaint", lambda shape, where, size: box_mask(
            size, box_region(box, shape, "--box", where)))
    mask = read_mask(args.mask)

    def from_file(shape, where, size):
        if mask.shape != tuple(shape):
            raise InputError(f"--mask {args.mask}: {mask.shape[1]}x{mask.shape[0]} does not match "
                             f"{where} ({shape[1]}x{shape[0]})")
        return resize_mask(mask, size)

    return run_painting(args, "inpaint", from_file)


def run_painting(args, command: str, mask_for) -> int:
    """mask_for((h, w) of the input, input name, model size) -> (size, size) generate-mask."""
    if args.modality not in MODALITIES:
        raise InputError(f"--modality {args.modality!r}: expected sat or map")
    options = sampling_args.sampler_options(args)
    resolver, paths = sampling_run.tile_sources(args)
    if args.condition and (paths is None or len(paths) != 1):
        raise InputError("--condition needs exactly one input image")
    sampling_run.check_checkpoint(args.checkpoint)
    kind = "joint" if not args.condition else ("map2sat" if args.modality == "sat" else "sat2map")
    out = sampling_run.out_dir(args)
    model = []

    def size():
        return model[0].tokenizer.image_size

    def outputs(stem):
        return {args.modality: out / f"{stem}_{args.modality}_{command}.png"}

    def file_mask(path):
        return {"mask": mask_for(images.read_image(path).shape[:2], str(path), size())}

    if paths is not None:
        jobs = sampling_run.file_jobs(paths, size, resolver, outputs, extra=file_mask)
    else:
        jobs = sampling_run.record_jobs(args.data, args.split, size, args.modality, outputs)
        for job in jobs:
            job.load = _with_mask(job.load, job.name, size, mask_for)

    def start():
        model.append(sampling_run.load_model(args.checkpoint, kind, options))
        from earthmapper_jax.sampling import inpaint

        condition = sampling_run.load_tile(args.condition, size()) if args.condition else None

        def sample(items, rng):
            cond = None if condition is None else np.repeat(condition[None], len(items), 0)
            _, outs = inpaint(model[0], sampling_run.stack(items), np.stack([it["mask"] for it in items]),
                              args.modality, rng, coords=sampling_run.coords_array(items),
                              condition=cond, **options)
            return [{args.modality: img} for img in np.asarray(outs)]
        return sample

    return sampling_run.run_jobs(jobs, start, args=args, command=command,
                                 options=sampling_run.settings(args, options))


def _with_mask(load, name, size, mask_for):
    def wrapped():
        item = load()
        item["mask"] = mask_for(item["image"].shape[:2], name, size())
        return item
    return wrapped
