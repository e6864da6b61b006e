"""Seams and throughput of `translate-area` on a georeferenced synthetic-city scene.

Renders one synthetic-city layout as a SIZE² satellite GeoTIFF in EPSG:3857 at 0.6 m/px
around the layout's own lat/lon, translates it sat -> map with each seam mode and prints one
JSON line per mode: the seam ratio (docs/large_areas.md: mean absolute colour step across the
tile borders / the same statistic half a stride away from them; 1.0 = no visible seam) and
the throughput (tiles/s and km²/h at 0.6 m/px, wall and per CPU-second of this process; the
steps that compile a sampler — the first, and for outpaint the second, the first in-painting
one — left out).

The model is the tiny preset (tokenizer "tiny": 64 px tiles, scales 1,2,3,4,6,8; EarthMapper
"tiny") with RANDOM weights unless --checkpoint names a trained one: with random weights the
seam figure only checks the mechanism (out-painting continues what the neighbours hold), not
the quality of a trained model.

    .venv/bin/python benchmarks/area_seams.py [--size 2048] [--overlap 16] [--batch 16]
        [--modes none,blend,outpaint] [--checkpoint DIR] [--guidance 0,0,0]
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

GSD = 0.6  # m/px, CNSatMap's zoom-19 ground resolution


def seam_ratio(img: np.ndarray, stride: int, overlap: int) -> float:
    """Mean |colour step| across tile borders / the same half a stride from them."""
    a = np.asarray(img, np.float64)

    def steps(xs, axis):
        xs = [x for x in xs if 0 < x < a.shape[axis]]
        if axis == 1:
            return [np.abs(a[:, x] - a[:, x - 1]).mean() for x in xs]
        return [np.abs(a[x] - a[x - 1]).mean() for x in xs]

    border = {ax: list(range(stride + overlap // 2, a.shape[ax], stride)) for ax in (0, 1)}
    ref = {ax: [b + stride // 2 for b in border[ax]] for ax in (0, 1)}
    num = steps(border[0], 0) + steps(border[1], 1)
    den = steps(ref[0], 0) + steps(ref[1], 1)
    return float(np.mean(num) / np.mean(den))


def _model(checkpoint, workdir):
    import jax

    import earthmapper_jax
    from configs.tokenizer_var import get_config
    from earthmapper_jax import tokenizer as tok_lib
    from earthmapper_jax.models import earthmapper as em
    from earthmapper_jax.models.loading import Model

    if checkpoint:
        return earthmapper_jax.load(checkpoint), "trained"
    cfg = get_config("tiny").model.to_dict()
    tok = tok_lib.Tokenizer.init(cfg, jax.random.key(0))
    mc = em.model_config("tiny", patch_nums=tuple(cfg["patch_nums"]))
    params = em.init_params(mc, jax.random.key(1))
    # VAR's init leaves the blocks near identity; perturb so tiles carry content to continue
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    return Model(mc, params, tok), "random weights"


def _scene(path, size, seed):
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from earthmapper_jax.data.synthetic_city import make_pair
    from earthmapper_jax.data_prep import xyz

    pair = make_pair(seed, size)
    mx, my = xyz.latlon_to_mercator(pair.lat, pair.lon)
    half = size * GSD / 2
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=3, dtype="uint8",
                       crs=CRS.from_epsg(3857), transform=from_origin(mx - half, my + half, GSD, GSD)) as d:
        d.write(np.moveaxis(pair.satellite, -1, 0))
    return pair


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--overlap", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--modes", default="none,blend,outpaint")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--guidance", default="0,0,0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the outputs in this folder")
    a = ap.parse_args()

    from earthmapper_jax.area import raster
    from earthmapper_jax.area.plan import Plan
    from earthmapper_jax.area.sidecar import Sidecar
    from earthmapper_jax.area.translate import assemble, generate_tiles

    work = a.out or tempfile.mkdtemp(prefix="area_seams_")
    os.makedirs(work, exist_ok=True)
    model, kind = _model(a.checkpoint, work)
    src = os.path.join(work, "scene.tif")
    _scene(src, a.size, a.seed)
    scene = raster.open_scene(src, tile=model.tokenizer.image_size)
    guidance = [float(v) for v in a.guidance.split(",")]
    base = Plan(scene.height, scene.width, model.tokenizer.image_size, a.overlap)
    print(json.dumps({"mode": "input scene", "seam_ratio": round(seam_ratio(scene.read(0, 0, a.size), base.stride,
                                                                             a.overlap), 3)}), flush=True)
    for mode in a.modes.split(","):
        plan = Plan(scene.height, scene.width, model.tokenizer.image_size, a.overlap, mode)
        out = os.path.join(work, f"map_{mode}.tif")
        side = Sidecar(out, {"mode": mode, "time": time.time()})
        marks = []

        class Bar:  # per-step clock: the first step (compilation) is left out of the rates
            def update(self, n):
                marks.append((n, time.perf_counter(), time.process_time()))

        t0, c0 = time.perf_counter(), time.process_time()
        generate_tiles(model, scene, plan, "sat2map", side, seed=a.seed, batch=a.batch, bar=Bar(),
                       guidance=guidance)
        assemble(plan, side, scene, out)
        side.remove()
        with raster.rasterio.open(out) as d:
            img = np.moveaxis(d.read(), 0, -1)
        skip = 2 if mode == "outpaint" else 1  # steps that compile (translate; in-painting)
        n = sum(m[0] for m in marks[skip:])
        wall, cpu = marks[-1][1] - marks[skip - 1][1], marks[-1][2] - marks[skip - 1][2]
        km2 = n * (plan.stride * GSD) ** 2 / 1e6  # each tile adds a stride² of new ground
        print(json.dumps({
            "mode": mode, "model": kind, "scene_px": a.size, "tile_px": plan.tile, "overlap": a.overlap,
            "tiles": len(plan.tiles()), "batch": a.batch, "seam_ratio": round(seam_ratio(img, plan.stride, a.overlap), 3),
            "tiles_per_s_wall": round(n / wall, 2), "tiles_per_cpu_s": round(n / cpu, 2),
            "km2_per_h_wall": round(km2 / wall * 3600, 2), "km2_per_cpu_h": round(km2 / cpu * 3600, 2),
            "compile_steps_s": round(marks[skip - 1][1] - t0, 1), "total_s": round(time.perf_counter() - t0, 1)}), flush=True)
    scene.close()


if __name__ == "__main__":
    main()
