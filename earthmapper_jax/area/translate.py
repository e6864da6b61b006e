"""Translating a whole scene tile by tile with the EarthMapper sampler (see area/__init__).

    generate_tiles(model, scene, plan, direction, sidecar, seed=0, batch=8, bar=None, **options)
        every tile of `plan` translated, resuming after sidecar.steps_done; tiles go to the
        sidecar. outpaint: each tile in-paints the target with its overlap with earlier tiles
        kept (their composed pixels encoded to tokens, forced at every scale) and the source
        tile teacher-forced; its coordinates are the lat/lon of its own centre.
    assemble(plan, sidecar, scene, out_tif)
        the output GeoTIFF (same CRS and transform as the scene), block row by block row
"""

from __future__ import annotations

import jax
import numpy as np

from earthmapper_jax.area.plan import Plan
from earthmapper_jax.area.raster import Scene, write_geotiff
from earthmapper_jax.area.sidecar import Sidecar
from earthmapper_jax.io.images import to_float, to_uint8
from earthmapper_jax.sampling import inpaint, translate
from earthmapper_jax.sampling.earthmapper_sampler import DIRECTIONS


def tile_coords(scene: Scene, plan: Plan, tiles) -> np.ndarray:
    """(N, 2) (lat, lon) of the centres of `tiles` (pixel-corner convention of the transform)."""
    half = plan.tile / 2.0
    pts = [(plan.origin(r, c)[1] + half, plan.origin(r, c)[0] + half) for r, c in tiles]
    return scene.centres(pts)


def _canvas(plan: Plan, r: int, c: int, get):
    """Out-painting input of tile (r, c): composed earlier neighbours, (T, T) generate-mask."""
    y0, x0 = plan.origin(r, c)
    ctx = {t: get(t) for t in plan.neighbours_before(r, c)}
    px, covered = plan.compose(y0, y0 + plan.tile, x0, x0 + plan.tile, ctx)
    if covered.any():  # fill the rest flat, so the coarse scales' encoding sees its colour
        px[~covered] = np.rint(px[covered].mean(0)).astype(np.uint8)
    return px, ~covered


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    """Pads the batch axis by repeating the last row: one compiled shape per run."""
    return a if len(a) == n else np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)])


def generate_tiles(model, scene: Scene, plan: Plan, direction: str, sidecar: Sidecar, seed: int = 0,
                   batch: int = 8, bar=None, **options) -> None:
    steps = plan.steps(batch)
    step_of = {t: i for i, st in enumerate(steps) for t in st}
    last_use = {t: max([step_of[u] for u in plan.users(*t)] + [step_of[t]]) for t in step_of}
    target = DIRECTIONS[direction][1]
    key = jax.random.key(seed)
    cache: dict = {}

    def get(t):
        if t not in cache:
            cache[t] = sidecar.load_tile(*t)
        return cache[t]

    T = plan.tile
    for i, step in enumerate(steps):
        if i < sidecar.steps_done:
            continue
        src = np.stack([scene.read(*plan.origin(r, c), T) for r, c in step])
        coords = _pad(tile_coords(scene, plan, step).astype(np.float32), batch)
        k = jax.random.fold_in(key, i)
        with_context = plan.seam == "outpaint" and any(plan.neighbours_before(r, c) for r, c in step)
        if with_context:
            canv, masks = zip(*(_canvas(plan, r, c, get) for r, c in step))
            _, out = inpaint(model, to_float(_pad(np.stack(canv), batch)), _pad(np.stack(masks), batch),
                             target, k, coords=coords, condition=to_float(_pad(src, batch)), **options)
        else:
            _, out = translate(model, to_float(_pad(src, batch)), direction, k, coords=coords, **options)
        out = to_uint8(np.asarray(out))
        for t, px in zip(step, out):
            sidecar.save_tile(*t, px)
            cache[t] = px
        sidecar.mark(i + 1)
        for t in [t for t in cache if last_use[t] <= i]:
            del cache[t]
        if bar is not None:
            bar.update(len(step))


def assemble(plan: Plan, sidecar: Sidecar, scene: Scene, out_tif) -> None:
    def blocks():
        rows: dict = {}
        for (r, c), (y0, y1, x0, x1) in plan.blocks():
            for old in [k for k in rows if k < r - 1]:
                del rows[old]
            need = {}
            for a in (r - 1, r):
                for b in (c - 1, c):
                    if a >= 0 and b >= 0:
                        row = rows.setdefault(a, {})
                        if b not in row:
                            row[b] = sidecar.load_tile(a, b)
                        need[(a, b)] = row[b]
            yield y0, x0, plan.compose(y0, y1, x0, x1, need)[0]

    write_geotiff(out_tif, scene.height, scene.width, scene.crs, scene.transform, blocks())
