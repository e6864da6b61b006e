"""`earthmapper translate`: satellite -> map or map -> satellite for image files, folders, or the
records of a prepared split.

    earthmapper translate --checkpoint MODEL --direction sat2map tiles/ extra.png --out maps/
    earthmapper translate --checkpoint MODEL --direction map2sat --data DATA --split test --out sats/

Every input image (PNG/JPEG/TIFF/BMP/WebP; a folder contributes its images, not recursively)
must be a square RGB tile; it is resized to the tokenizer's size if needed. Each output is
OUT/<name>_<target>.png at the tokenizer's size (with --data, <name> is the record's tile id).
Coordinates per tile and the output machinery (atomic outputs, rerun skips finished ones,
done / skipped / failed summary, OUT/translate_options.json): cli/sampling_run.py.
"""

from __future__ import annotations

import numpy as np

from earthmapper_jax.cli import sampling_args, sampling_run
from earthmapper_jax.errors import InputError

DIRECTIONS = ("sat2map", "map2sat")


def register(subparsers):
    p = subparsers.add_parser(
        "translate", help="translate satellite tiles to maps or maps to satellite tiles",
        description="Translate image files, folders or a prepared split with a trained EarthMapper (or pix2pix) model.")
    p.add_argument("inputs", nargs="*", metavar="IN", help="image files or folders of images")
    p.add_argument("--direction", required=True, help="sat2map or map2sat")
    sampling_args.add_model_options(p)
    sampling_args.add_tile_coords_options(p)
    p.set_defaults(func=run)


def run(args):
    if args.direction not in DIRECTIONS:
        raise InputError(f"unknown direction {args.direction!r}; expected one of {list(DIRECTIONS)}")
    options = sampling_args.sampler_options(args)
    resolver, paths = sampling_run.tile_sources(args)
    sampling_run.check_checkpoint(args.checkpoint, kinds=("earthmapper", "pix2pix"))

    source, target = args.direction.split("2")
    out = sampling_run.out_dir(args)
    model = []

    def size():  # pix2pix has no tokenizer: its own config says the size
        m = model[0]
        return m.tokenizer.image_size if m.tokenizer is not None else int(m.config.image_size)

    def outputs(stem):
        return {target: out / f"{stem}_{target}.png"}

    if paths is not None:
        jobs = sampling_run.file_jobs(paths, size, resolver, outputs)
    else:
        jobs = sampling_run.record_jobs(args.data, args.split, size, source, outputs)

    def start():
        model.append(sampling_run.load_model(args.checkpoint, args.direction, options))
        from earthmapper_jax.sampling import translate

        # pix2pix: one direction per model (a whole-run error, before any tile), and none of
        # the token sampler's options
        opts = options
        if model[0].mode == "pix2pix":
            from earthmapper_jax.sampling.pix2pix_sampler import check_direction

            check_direction(model[0], args.direction)
            opts = {}

        def sample(items, rng):
            _, outs = translate(model[0], sampling_run.stack(items), args.direction, rng,
                                coords=sampling_run.coords_array(items), **opts)
            return [{target: img} for img in np.asarray(outs)]
        return sample

    return sampling_run.run_jobs(jobs, start, args=args, command="translate",
                                 options=sampling_run.settings(args, options))
