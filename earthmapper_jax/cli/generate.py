"""`earthmapper generate`: satellite/map pairs from coordinates alone.

    earthmapper generate --checkpoint MODEL --coords 40.71,-74.01 --coords -33.9,151.2 --n 4 --out pairs/
    earthmapper generate --checkpoint MODEL --coords-file places.csv --n 2 --out pairs/

Coordinates: --coords LAT,LON (repeatable; `none` = the null coordinate) and/or a CSV/JSON
sidecar (--coords-file, the format `earthmapper prepare` reads: a name column and lat/lon or
bounds). For each coordinate, --n pairs: OUT/<name>_<k>_sat.png and OUT/<name>_<k>_map.png
(<name> is the sidecar's name, else LAT_LON). Output machinery: cli/sampling_run.py.
"""

from __future__ import annotations

import numpy as np

from earthmapper_jax.cli import sampling_args, sampling_run
from earthmapper_jax.data_prep import coords as coords_lib
from earthmapper_jax.errors import InputError


def register(subparsers):
    p = subparsers.add_parser("generate", help="generate satellite/map pairs from coordinates",
                              description="Generate satellite/map pairs from coordinates with a "
                                          "trained EarthMapper model.")
    g = p.add_argument_group("what to generate")
    g.add_argument("--coords", action="append", default=[], metavar="LAT,LON",
                   help="coordinates in degrees (repeatable; -33.9,151.2 works; 'none' = no coordinates)")
    g.add_argument("--coords-file", default=None, metavar="CSV",
                   help="sidecar CSV/JSON with a name column and lat/lon (as `earthmapper prepare` reads)")
    g.add_argument("--n", type=int, default=1, help="pairs per coordinate")
    sampling_args.add_model_options(p)
    p.set_defaults(func=run)


def places(args) -> list[tuple[str, tuple[float, float], str]]:
    """(name, (lat, lon), source) of every requested coordinate, checked."""
    out = []
    for text in args.coords:
        if text.strip().lower() == "none":
            out.append(("none", sampling_run.NO_COORDS, "none"))
            continue
        lat, lon = sampling_args.parse_coords(text)
        out.append((f"{lat:.5f}_{lon:.5f}", (lat, lon), "--coords"))
    if args.coords_file:
        side = coords_lib.Sidecar(args.coords_file)
        for name, e in side.entries.items():
            if np.isnan(e["lat"]):
                raise InputError(f"{args.coords_file}: entry {name!r} has no coordinates")
            latlon = sampling_args.check_latlon(e["lat"], e["lon"], f"{args.coords_file}: {name}")
            out.append((name.replace("/", "_"), latlon, "sidecar"))
    if not out:
        raise InputError("nothing to generate: give --coords LAT,LON (repeatable) or --coords-file CSV")
    return out


def run(args):
    options = sampling_args.sampler_options(args)
    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    todo = places(args)
    sampling_run.check_checkpoint(args.checkpoint)
    out = sampling_run.out_dir(args)
    jobs = []
    for name, latlon, source in todo:
        for k in range(args.n):
            stem = f"{name}_{k:03d}"
            jobs.append(sampling_run.Job(
                stem, {"sat": out / f"{stem}_sat.png", "map": out / f"{stem}_map.png"},
                lambda latlon=latlon, source=source: {"coords": latlon, "coords_source": source}))

    def start():
        model = sampling_run.load_model(args.checkpoint, "joint", options)
        from earthmapper_jax.sampling import generate

        def sample(items, rng):
            _, (sats, maps) = generate(model, sampling_run.coords_array(items), rng, **options)
            return [{"sat": s, "map": m} for s, m in zip(np.asarray(sats), np.asarray(maps))]
        return sample

    return sampling_run.run_jobs(jobs, start, args=args, command="generate", unit="pair",
                                 options=sampling_run.settings(args, options))
