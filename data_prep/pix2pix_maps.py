"""The pix2pix "maps" (New York) data -> TFRecord splits. No coordinates: lat/lon are NaN.

Accepted layouts (detected):
  ROOT/train/*.jpg, ROOT/val/*.jpg [, ROOT/test/*.jpg]   pix2pix: 1200x600 files, aerial left |
                                                         map right (--map-left if swapped)
  ROOT/trainA, trainB, testA, testB [, valA, valB]     CycleGAN: A aerial, B map, paired by name
                                                         (`1_A.jpg` <-> `1_B.jpg`, or equal names)

    earthmapper prepare pix2pix /data/maps --out /data/maps_tfr --size 256
"""

from __future__ import annotations

import argparse
import os
import re

from earthmapper_jax.data_prep import common, pairing
from earthmapper_jax.errors import InputError

CITY = "new_york"


def _images(d):
    return [r for r in pairing.list_images(d) if "/" not in r]


def list_tasks(root, *, map_left: bool = False, a_is_map: bool = False):
    """({split: [PairTask]}, listing skips, layout name)."""
    root = str(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(2, "no such directory", root)
    subdirs = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
    splits, skips = {}, []
    cyc = sorted({d[:-1] for d in subdirs if d[-1:] in "AB" and d[:-1] + "A" in subdirs and d[:-1] + "B" in subdirs})
    if cyc:
        for name in cyc:
            side = {}
            for letter in "AB":
                table = side.setdefault(letter, {})
                d = os.path.join(root, name + letter)
                for rel in _images(d):
                    key = re.sub(rf"[_\-]{letter}$", "", os.path.splitext(rel)[0])
                    pairing.add_unique(table, key, f"{name}{letter}/{rel}", skips)
            sat, maps = (side["B"], side["A"]) if a_is_map else (side["A"], side["B"])
            pairs, unpaired = pairing.pair_up(sat, maps)
            skips += unpaired
            split = pairing.SPLIT_DIRS.get(name.lower(), name)
            splits[split] = [common.PairTask(tile_id=f"{split}/{k}", satellite=os.path.join(root, s),
                                             map=os.path.join(root, m), city=CITY) for k, s, m in pairs]
        return splits, skips, "cyclegan"
    found = [d for d in sorted(subdirs) if d.lower() in pairing.SPLIT_DIRS and _images(os.path.join(root, d))]
    if not found:
        raise InputError(f"{root}: neither pix2pix (train/ val/ of side-by-side images) nor CycleGAN "
                         "(trainA/ trainB/ testA/ testB/) layout")
    for d in found:
        split = pairing.SPLIT_DIRS[d.lower()]
        splits[split] = [
            common.PairTask(tile_id=f"{split}/{os.path.splitext(rel)[0]}", satellite=os.path.join(root, d, rel),
                            side_by_side="map_left" if map_left else "sat_left", city=CITY)
            for rel in _images(os.path.join(root, d))
        ]
    return splits, skips, "side_by_side"


def register(subparsers):
    p = subparsers.add_parser("pix2pix", help="pix2pix 'maps' (side-by-side) or its CycleGAN layout",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="folder holding train/ val/ (pix2pix) or trainA/ trainB/ ... (CycleGAN)")
    common.add_output_args(p)
    p.add_argument("--map-left", action="store_true", help="side-by-side files have the map on the left")
    p.add_argument("--a-is-map", action="store_true", help="CycleGAN layout with maps in *A folders")
    p.set_defaults(func=main)


def main(args):
    splits, skips, layout = list_tasks(args.root, map_left=args.map_left, a_is_map=args.a_is_map)
    print(f"{args.root}: {layout} layout, " + ", ".join(f"{s} {len(t)}" for s, t in splits.items()))
    common.run_tasks(args, splits, "pix2pix_maps", skips)
    return 0
