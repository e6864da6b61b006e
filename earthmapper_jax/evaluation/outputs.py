"""Where an evaluation's generated tiles live, and reading them back.

    own outputs      EVAL/generated/<direction>/<tile_id>.png (`generated_path`)
    --generated DIR  DIR/<direction>/<tile_id>.<ext> (the same layout, so an evaluation's
                     outputs can be rescored), else DIR/<tile_id>_<map|sat>.<ext> (the names
                     `earthmapper translate` writes); any suffix of io.images.IMAGE_SUFFIXES
    sample_rows      [source | generated | real] rows of the first tiles, for the sample grid
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from earthmapper_jax.errors import DataError, InputError
from earthmapper_jax.io import images

DIRECTIONS = {"sat2map": ("sat", "map"), "map2sat": ("map", "sat")}  # name -> (source, target)


def tile_name(tile_id) -> str:
    """A tile id as a file name (path separators replaced)."""
    return str(tile_id).replace("/", "_").replace(os.sep, "_")


def generated_path(out, direction: str, tile_id) -> pathlib.Path:
    return pathlib.Path(out) / "generated" / direction / f"{tile_name(tile_id)}.png"


def find_generated(folder, direction: str, tile_id) -> pathlib.Path:
    """The --generated file of one tile (module doc); DataError naming both patterns if none."""
    folder = pathlib.Path(folder)
    name, target = tile_name(tile_id), DIRECTIONS[direction][1]
    for base in (folder / direction / name, folder / f"{name}_{target}"):
        for suffix in images.IMAGE_SUFFIXES:
            path = base.with_name(base.name + suffix)
            if path.is_file():
                return path
    raise DataError(f"--generated {folder}: no output for tile {tile_id!r} of the {direction} "
                    f"split (looked for {direction}/{name}.png and {name}_{target}.png)")


def read_generated(folder, direction: str, tile_ids, size: int) -> np.ndarray:
    """(n, size, size, 3) float in [-1, 1]; InputError for a tile of another size."""
    out = []
    for t in tile_ids:
        path = find_generated(folder, direction, t)
        px = images.read_image(path)
        if px.shape[:2] != (size, size):
            raise InputError(f"--generated {path}: {px.shape[1]}x{px.shape[0]}, expected "
                             f"{size}x{size} (the split's tiles)")
        out.append(images.to_float(px))
    return np.stack(out)


def sample_rows(ds, direction: str, count: int, size: int, out=None, generated=None) -> list:
    """[source | generated | real] for the first `count` elements of `ds` (a dataset of
    pipeline elements); the generated tile from `generated` (a folder) or from `out`."""
    src, tgt = DIRECTIONS[direction]
    rows = []
    for j in range(min(count, len(ds))):
        e = ds[j]
        path = (find_generated(generated, direction, e["tile_id"]) if generated
                else generated_path(out, direction, e["tile_id"]))
        rows.append([e[f"{src}_image"], images.read_image(path, size), e[f"{tgt}_image"]])
    return rows
