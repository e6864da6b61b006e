"""`earthmapper translate-area`: a whole georeferenced scene -> a georeferenced map (or back).

    earthmapper translate-area SCENE.tif --checkpoint RUN_DIR --direction sat2map --out MAP.tif

SCENE is a GeoTIFF (EPSG:4326, EPSG:3857, a UTM zone or any CRS pyproj can take to lat/lon;
3 or 4 bands, 8-bit, or 16-bit / float stretched 2-98 % as `prepare` does) or a folder of XYZ
tiles z/x/y.png (one zoom). OUT ending in .tif/.tiff gets a GeoTIFF with the scene's CRS and
transform plus OUT.png (a preview); any other OUT (XYZ input only) a folder z/x/y.png on
the input's grid. With --gsd (the scene's metres per pixel, when it differs from the model's
--model-gsd) the scene is resampled as it is read and the output has the model's resolution
on the same CRS and extent. A run killed part-way resumes from OUT.parts/ when rerun with the same
arguments. docs/large_areas.md has the details.
"""

from __future__ import annotations

import os
import pathlib

from earthmapper_jax.cli import sampling_args
from earthmapper_jax.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")


def register(subparsers):
    p = subparsers.add_parser(
        "translate-area", help="translate a whole georeferenced scene (GeoTIFF / XYZ tiles), seamlessly",
        description="Translate a large georeferenced scene tile by tile with overlap (docs/large_areas.md).")
    p.add_argument("scene", metavar="SCENE", help="GeoTIFF file or XYZ folder (z/x/y.png)")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="EarthMapper model directory")
    p.add_argument("--direction", required=True, help="sat2map or map2sat")
    p.add_argument("--out", required=True, metavar="OUT", help="OUT.tif (GeoTIFF + OUT.png) or a folder (XYZ)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (and a stale OUT.parts/)")
    p.add_argument("--seam", choices=("none", "blend", "outpaint"), default="outpaint",
                   help="independent tiles, feathered blend, or out-painting from finished neighbours")
    p.add_argument("--overlap", type=int, default=None, metavar="PX",
                   help="tile overlap in pixels (default: a quarter of the model's tile)")
    p.add_argument("--coords", default=None, metavar="LAT,LON",
                   help="coordinates for every tile of a scene without georeferencing")
    p.add_argument("--gsd", type=float, default=None, metavar="M",
                   help="the scene's metres per pixel, when it differs from --model-gsd: resampled to it")
    p.add_argument("--model-gsd", type=float, default=0.6, metavar="M",
                   help="metres per pixel the model was trained at (CNSatMap zoom 19: 0.6)")
    p.add_argument("--no-preview", action="store_true", help="no PNG preview beside a GeoTIFF output")
    # Sampling flags as `translate` has them (to be unified with a shared sampling_args module).
    p.add_argument("--batch-size", type=int, default=8, help="tiles per sampler call")
    p.add_argument("--seed", type=int, default=0)
    sampling_args.add_sampling_options(p.add_argument_group("sampling (as `earthmapper translate`)"))
    p.set_defaults(func=run)


def run(args):
    try:
        from earthmapper_jax.area import raster
    except ImportError as e:
        raise InputError(f"translate-area needs the geo extra ({e.name} missing): "
                         "pip install 'earthmapper-jax[geo]'") from None
    import earthmapper_jax
    from earthmapper_jax.area.plan import Plan
    from earthmapper_jax.area.sidecar import Sidecar
    from earthmapper_jax.area.translate import assemble, generate_tiles
    from earthmapper_jax.models.geo import validate_coords
    from earthmapper_jax.progress import progress
    from earthmapper_jax.sampling.earthmapper_sampler import DIRECTIONS

    if args.direction not in DIRECTIONS:
        raise InputError(f"--direction {args.direction!r}: expected one of {sorted(DIRECTIONS)}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    coords = None
    if args.coords:
        coords = tuple(float(v) for v in validate_coords(sampling_args.parse_coords(args.coords), 1)[0])
    options = sampling_args.sampler_options(args)
    for flag, v in (("--gsd", args.gsd), ("--model-gsd", args.model_gsd)):
        if v is not None and not v > 0:
            raise InputError(f"{flag} must be > 0 metres per pixel, got {v}")
    scale = 1.0 if args.gsd is None or abs(args.gsd / args.model_gsd - 1) < 1e-3 else args.gsd / args.model_gsd
    out = pathlib.Path(args.out)
    to_tiff = out.suffix.lower() in TIFF_SUFFIXES
    preview = out.with_suffix(".png")
    if not args.overwrite:
        for p in [out] + ([preview] if to_tiff and not args.no_preview else []):
            if p.exists():
                raise InputError(f"{p}: exists; pass --overwrite to replace it")
    scene = raster.open_scene(args.scene, coords, scale=scale)
    try:
        if not to_tiff and scene.xyz_grid is None:
            raise InputError(f"--out {out}: XYZ output needs an XYZ folder as input; use OUT.tif for a GeoTIFF")
        model = earthmapper_jax.load(args.checkpoint)
        if model.mode != "earthmapper":
            raise InputError(f"{args.checkpoint}: a {model.mode!r} checkpoint; translate-area needs an EarthMapper one")
        size = model.tokenizer.image_size
        overlap = size // 4 if args.overlap is None else args.overlap
        if scene.height < size or scene.width < size:
            raise InputError(f"{scene.name}: scene is {scene.width}×{scene.height} px, smaller than one "
                             f"{size}×{size} tile of the model")
        plan = Plan(scene.height, scene.width, size, overlap, args.seam)
        settings = dict(scene=os.path.abspath(args.scene), size=[scene.height, scene.width],
                        checkpoint=os.path.abspath(args.checkpoint), direction=args.direction,
                        seam=args.seam, overlap=overlap, scale=scale, seed=args.seed, batch=args.batch_size,
                        coords=coords, options=options)
        side = Sidecar(out, settings, discard_other=args.overwrite)
        n = len(plan.tiles())
        done = sum(len(s) for s in plan.steps(args.batch_size)[:side.steps_done])
        with progress(n, desc=f"translate-area {args.seam}", unit="tile", initial=done) as bar:
            generate_tiles(model, scene, plan, args.direction, side, seed=args.seed,
                           batch=args.batch_size, bar=bar, **options)
        if to_tiff:
            assemble(plan, side, scene, out)
            if not args.no_preview:
                raster.write_preview(preview, out)
        else:
            tmp = side.dir / "mosaic.tif"
            assemble(plan, side, scene, tmp)
            raster.write_xyz(out, tmp, scene, overwrite=args.overwrite)
        side.remove()
    finally:
        scene.close()
    print(f"wrote {out} ({plan.rows}×{plan.cols} tiles of {size} px, overlap {overlap}, seam {args.seam})")
    return 0
