"""Generic paired folders -> TFRecord splits, with user-given glob patterns per modality.

The `*` (and `?`) parts of the two patterns are the pairing key: with `--sat-pattern
'aerial_*.jpg' --map-pattern 'map_*.jpg'`, `aerial_0042.jpg` pairs with `map_0042.jpg`. Patterns
are matched against paths relative to ROOT, so they may name folders (`aerial/*.png`,
`*/sat/*.tif`); `*` also matches `/`. With --side-by-side, one pattern names files holding both
images (the pix2pix maps set: aerial left, map right, so `sat_left`).

Splits: train/ val/ test/ folders (anywhere in the path, or ROOT itself being `val/`) are the
splits; else --val-fraction / --test-fraction draw them. The sizes are printed before
converting; the first tiles matched as satellites are checked to look like satellite images.

    earthmapper prepare folders /data/tiles --sat-pattern 'aerial_*.jpg' --map-pattern 'map_*.jpg' \
        --out /data/tiles_tfr --size 256 --val-fraction 0.05
    earthmapper prepare folders /data/maps --sat-pattern '*.jpg' --side-by-side sat_left \
        --out /data/maps_tfr          # pix2pix maps: its train/ and val/ folders are kept
"""

from __future__ import annotations

import argparse
import os

from earthmapper_jax.data_prep import common, pairing
from earthmapper_jax.data_prep.coords import CoordResolver, find_sidecar
from earthmapper_jax.data_prep.splits import assign, describe
from earthmapper_jax.errors import InputError


def list_tasks(root, sat_pattern: str, map_pattern: str | None = None, *, side_by_side: str = "",
               coords: str = "auto", sidecar: str | None = None, name_pattern: str | None = None,
               xyz_pattern: str | None = None, city: str = ""):
    """([PairTask], listing skips)."""
    root = str(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(2, "no such directory", root)
    if not side_by_side and not map_pattern:
        raise InputError("give --map-pattern (or --side-by-side for files holding both images)")
    if sidecar is None and coords in ("auto", "sidecar"):
        sidecar = find_sidecar(root)
    resolver = CoordResolver(coords, sidecar, name_pattern, xyz_pattern)
    srx = pairing.glob_to_regex(sat_pattern)
    mrx = pairing.glob_to_regex(map_pattern) if map_pattern else None
    sat, maps, skips = {}, {}, []
    for rel in pairing.list_images(root):
        k = pairing.key_by_pattern(rel, srx)
        if k is not None:
            pairing.add_unique(sat, k, rel, skips)
        elif mrx is not None and (k := pairing.key_by_pattern(rel, mrx)) is not None:
            pairing.add_unique(maps, k, rel, skips)
    if side_by_side:
        pairs = [(k, s, None) for k, s in sorted(sat.items())]
    else:
        pairs, unpaired = pairing.pair_up(sat, maps)
        skips += unpaired
    if not pairs:
        raise InputError(f"{root}: no pairs match --sat-pattern {sat_pattern!r}"
                         + (f" / --map-pattern {map_pattern!r}" if map_pattern else ""))
    tasks = []
    for key, s_rel, m_rel in pairs:
        tile_key = os.path.splitext(s_rel)[0] if side_by_side else key
        c = resolver.resolve(tile_key, os.path.basename(s_rel))
        tasks.append(common.PairTask(
            tile_id=tile_key, satellite=os.path.join(root, s_rel),
            map=os.path.join(root, m_rel) if m_rel else None, side_by_side=side_by_side,
            lat=c["lat"], lon=c["lon"], coords_source=c["source"], city=c["city"] or city,
            split=c["split"] or pairing.split_from_path(s_rel, root),
        ))
    return tasks, skips


def register(subparsers):
    p = subparsers.add_parser("folders", help="generic paired folders with glob patterns per modality",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="dataset root")
    p.add_argument("--sat-pattern", required=True, help="glob of satellite images relative to ROOT, e.g. 'aerial_*.jpg'")
    p.add_argument("--map-pattern", default=None, help="glob of map images relative to ROOT, e.g. 'map_*.jpg'")
    p.add_argument("--side-by-side", choices=("sat_left", "map_left"), default="",
                   help="--sat-pattern files hold both images side by side")
    p.add_argument("--city", default="", help="city name for every tile (unless the sidecar/file name says)")
    common.add_output_args(p)
    common.add_coord_args(p)
    common.add_split_args(p)
    p.set_defaults(func=main)


def main(args):
    tasks, skips = list_tasks(args.root, args.sat_pattern, args.map_pattern, side_by_side=args.side_by_side,
                              coords=args.coords, sidecar=args.sidecar, name_pattern=args.name_pattern,
                              xyz_pattern=args.xyz_pattern, city=args.city)
    splits = assign(tasks, **common.split_kwargs(args))
    print(f"{args.root}: {len(tasks)} pairs; splits {describe(splits)}", flush=True)
    common.warn_if_swapped(splits, args.side_by_side)
    common.run_tasks(args, splits, "folders", skips)
    return 0
