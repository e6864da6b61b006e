"""CNSatMap (and any paired tile set laid out like it) -> TFRecord splits.

CNSatMap's release format is not public; these layouts are accepted (see docs/data.md):

  ROOT/sat/<name>.png  + ROOT/map/<name>.png                 paired folders (any nesting below)
  ROOT/<city>/sat/...  + ROOT/<city>/map/...                 per-city folders (city = folder)
  ROOT/<train|val|test>/[<city>/]sat|map/...                 preset splits
  ROOT/.../sat_<name>.png + map_<name>.png  (or <name>_sat / <name>_map)   prefix/suffix pairs
  ROOT/sat/<z>/<x>/<y>.png  or  <z>_<x>_<y>.png               XYZ tiles (coordinates from z/x/y)
  ROOT/sat/<name>.tif  (+ map .tif/.png)                      GeoTIFFs (coordinates from the tags)

Coordinates (`--coords auto`): a CSV/JSON sidecar (ROOT/metadata.csv, coords.json, ... or
--sidecar), GeoTIFF tags, `..._<lat>_<lon>.png` names, XYZ indices; NaN when none applies.

    earthmapper prepare cnsatmap /data/CNSatMap --out /data/cnsatmap_tfr --split city \
        --test-fraction 0.1 --val-fraction 0.02 --min-map-std 10
"""

from __future__ import annotations

import argparse
import os

from earthmapper_jax.data_prep import common, pairing
from earthmapper_jax.data_prep.coords import CoordResolver, find_sidecar
from earthmapper_jax.data_prep.splits import assign
from earthmapper_jax.errors import InputError


def list_tasks(root, *, coords: str = "auto", sidecar: str | None = None, name_pattern: str | None = None,
               xyz_pattern: str | None = None, sat_names=pairing.SAT_NAMES, map_names=pairing.MAP_NAMES):
    """([PairTask], listing skips) for a CNSatMap-style tree."""
    root = str(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(2, "no such directory", root)
    if sidecar is None and coords in ("auto", "sidecar"):
        sidecar = find_sidecar(root)
    resolver = CoordResolver(coords, sidecar, name_pattern, xyz_pattern)
    sat, maps, skips = {}, {}, []
    for rel in pairing.list_images(root):
        got = pairing.modality_key(rel, sat_names, map_names)
        if got is None:
            skips.append(("unrecognised", rel, "neither in a satellite/map folder nor named sat_*/map_*"))
            continue
        pairing.add_unique(sat if got[0] == "sat" else maps, got[1], rel, skips)
    pairs, unpaired = pairing.pair_up(sat, maps)
    tasks = []
    for key, s_rel, m_rel in pairs:
        split, city, _ = pairing.context_from_key(key)
        c = resolver.resolve(key, os.path.basename(s_rel))
        tasks.append(common.PairTask(
            tile_id=key, satellite=os.path.join(root, s_rel), map=os.path.join(root, m_rel),
            lat=c["lat"], lon=c["lon"], coords_source=c["source"], city=c["city"] or city,
            split=c["split"] or split,
        ))
    return tasks, skips + unpaired


def register(subparsers):
    p = subparsers.add_parser("cnsatmap", help="CNSatMap-style paired tiles (folders, prefixes, XYZ, GeoTIFF)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="dataset root")
    common.add_output_args(p)
    common.add_coord_args(p)
    common.add_split_args(p)
    p.add_argument("--sat-names", default=",".join(pairing.SAT_NAMES), help="folder/prefix names of satellite images")
    p.add_argument("--map-names", default=",".join(pairing.MAP_NAMES), help="folder/prefix names of map images")
    p.set_defaults(func=main)


def main(args):
    tasks, skips = list_tasks(args.root, coords=args.coords, sidecar=args.sidecar, name_pattern=args.name_pattern,
                              xyz_pattern=args.xyz_pattern, sat_names=_names(args.sat_names),
                              map_names=_names(args.map_names))
    if not tasks:
        reasons = sorted({r for r, _, _ in skips})
        raise InputError(f"{args.root}: no satellite/map pairs found ({len(skips)} image(s) skipped: "
                         f"{', '.join(reasons) or 'no images'}); see docs/data.md for the layouts")
    splits = assign(tasks, **common.split_kwargs(args))
    common.run_tasks(args, splits, "cnsatmap", skips)
    return 0


def _names(s: str):
    return tuple(n.strip() for n in s.split(",") if n.strip())

