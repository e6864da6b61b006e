"""The procedural synthetic city (earthmapper_jax.data.synthetic_city) -> TFRecord splits, so
the demo and the tests run the real input pipeline with no downloaded data.

    earthmapper prepare synthetic --n 2000 --out /tmp/syn --size 256 --val-fraction 0.1
"""

from __future__ import annotations

import dataclasses
import functools
import os

from earthmapper_jax.data import example, synthetic_city
from earthmapper_jax.data_prep import common
from earthmapper_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class SynTask:
    index: int
    tile_id: str = ""


def _load(task: SynTask, seed: int, size: int, bbox, fmt: str, jpeg_quality: int):
    p = synthetic_city.make_pair(synthetic_city.pair_seed(seed, task.index), size, bbox)
    rec = example.PairRecord(
        satellite=example.encode_image(p.satellite, fmt, jpeg_quality),
        map=example.encode_image(p.map, "png"),  # flat colours: PNG is small and exact
        satellite_format=fmt, map_format="png", tile_id=p.tile_id, latitude=p.lat, longitude=p.lon,
        city="synthetic", source="synthetic", height=size, width=size, original_height=size, original_width=size,
    )
    return example.encode(rec), "synthetic"


def prepare(out_dir, n: int, *, size: int = 256, seed: int = 0, val_fraction: float = 0.0,
            bbox=synthetic_city.DEFAULT_BBOX, fmt: str = "png", jpeg_quality: int = 95, workers: int = 1,
            shard_bytes: int = common.DEFAULT_SHARD_BYTES, overwrite: bool = False, progress: bool = True,
            args: dict | None = None) -> dict:
    """Writes n synthetic pairs (the last round(n * val_fraction) as 'val'); returns the summary."""
    if n < 1 or size < 8:
        raise InputError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
    if not 0 <= val_fraction < 1:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    n_val = round(n * val_fraction)
    tasks = [SynTask(i, synthetic_city.tile_id(synthetic_city.pair_seed(seed, i))) for i in range(n)]
    splits = {"train": tasks[: n - n_val], "val": tasks[n - n_val:]}
    load = functools.partial(_load, seed=seed, size=size, bbox=tuple(bbox), fmt=fmt, jpeg_quality=jpeg_quality)
    args = args or dict(n=n, size=size, seed=seed, val_fraction=val_fraction, bbox=list(bbox), format=fmt)
    return common.convert({k: v for k, v in splits.items() if v}, out_dir, load_fn=load, converter="synthetic",
                          args=args, workers=workers, shard_bytes=shard_bytes, overwrite=overwrite,
                          progress=progress, extra={"image_size": size})


def register(subparsers):
    p = subparsers.add_parser("synthetic", help="the procedural synthetic city (no data needed)",
                              description=__doc__)
    p.add_argument("--n", type=int, required=True, help="number of pairs")
    p.add_argument("--out", required=True, help="output data directory")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bbox", default=",".join(str(v) for v in synthetic_city.DEFAULT_BBOX),
                   help="lat0,lon0,lat1,lon1 of the synthetic city")
    p.add_argument("--format", choices=("png", "jpeg"), default="png", help="satellite encoding (maps are PNG)")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--shard-mb", type=float, default=common.DEFAULT_SHARD_BYTES / 2**20)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def main(args):
    try:
        bbox = tuple(float(v) for v in args.bbox.split(","))
        assert len(bbox) == 4
    except (ValueError, AssertionError):
        raise InputError(f"--bbox must be lat0,lon0,lat1,lon1, got {args.bbox!r}") from None
    summary = prepare(args.out, args.n, size=args.size, seed=args.seed, val_fraction=args.val_fraction, bbox=bbox,
                      fmt=args.format, jpeg_quality=args.jpeg_quality, workers=args.workers,
                      shard_bytes=int(args.shard_mb * 2**20), overwrite=args.overwrite, progress=not args.quiet,
                      args=common.cli_args_dict(args))
    common.print_summary(summary)
    return 0
