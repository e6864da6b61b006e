"""Scenes for area translation: a GeoTIFF (rasterio) or a folder of XYZ tiles, read window by
window, with the georeferencing that gives every tile the lat/lon of its centre (pyproj).

    open_scene(path, coords=None, tile=0, scale=1.0) -> Scene
        InputError (one line) for what cannot be used; scale != 1 resamples a GeoTIFF window
        by window (GDAL warped VRT, bilinear) to the model's ground resolution
    Scene.read(y0, x0, size) -> uint8 (size, size, 3); windows past the edge repeat the edge
    Scene.centres(points) -> (N, 2) (lat, lon) of scene pixel positions (x, y) (sub-pixel)
    latlon(crs, transform, cols, rows) -> (N, 2) (lat, lon)     any raster's pixel positions
    read_raster(path) -> (pixels, crs | None, transform | None)  a whole small raster (tiles)
    stretch_range(a) / stretch(a, lo, hi)      the 2-98 percentile stretch of 16-bit / float
                                               rasters to uint8 (the one `prepare` applies)
    write_geotiff(path, height, width, crs, transform, blocks)   atomic, tiled, deflate
    write_preview(path, tif, max_side)         PNG preview, decimated by GDAL
    write_xyz(out_dir, tif, scene)             z/x/y.png on the input's XYZ grid (atomic folder)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import warnings
from typing import Callable, Optional

import numpy as np
import pyproj
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from earthmapper_jax.data_prep import xyz
from earthmapper_jax.errors import InputError
from earthmapper_jax.io import files, images

WGS84 = "EPSG:4326"
STATS_SIDE = 1024  # the stretch percentiles are taken on a read decimated to at most this side


def stretch_range(a: np.ndarray) -> tuple[float, float]:
    """2nd and 98th percentile of a deeper-than-8-bit raster (NaN ignored)."""
    a = np.asarray(a, np.float64)
    return float(np.nanpercentile(a, 2)), float(np.nanpercentile(a, 98))


def stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear [lo, hi] -> [0, 255], clipped, NaN -> 0, uint8."""
    a = np.clip((np.asarray(a, np.float64) - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255)
    return np.nan_to_num(a).astype(np.uint8)


@dataclasses.dataclass
class Scene:
    """A raster of `height` × `width` RGB pixels. `crs`/`transform` are None when the source
    has no georeferencing (then `coords` is the one (lat, lon) every tile gets)."""

    name: str
    height: int
    width: int
    crs: Optional[CRS]
    transform: Optional[Affine]
    _read: Callable[[int, int, int, int], np.ndarray]
    coords: Optional[tuple] = None
    xyz_grid: Optional[tuple] = None  # (z, x0, y0, tile_px) for an XYZ folder
    close: Callable[[], None] = lambda: None

    def read(self, y0: int, x0: int, size: int) -> np.ndarray:
        """(size, size, 3) uint8 window at (y0, x0); pixels past the edge repeat the edge."""
        ya, xa = max(y0, 0), max(x0, 0)
        yb, xb = min(y0 + size, self.height), min(x0 + size, self.width)
        a = self._read(ya, xa, yb - ya, xb - xa)
        pad = ((ya - y0, y0 + size - yb), (xa - x0, x0 + size - xb), (0, 0))
        return np.pad(a, pad, mode="edge") if any(p for q in pad for p in q) else a

    def centres(self, points) -> np.ndarray:
        """(N, 2) float64 (lat, lon) of pixel positions (x, y) given in scene pixels."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        if self.transform is None:
            return np.tile(np.asarray(self.coords, np.float64), (len(pts), 1))
        return latlon(self.crs, self.transform, pts[:, 0], pts[:, 1])


def latlon(crs: CRS, transform: Affine, cols, rows) -> np.ndarray:
    """(N, 2) (lat, lon) of pixel positions (column, row) of a raster (pixel-corner convention)."""
    xs, ys = _apply(transform, np.asarray(cols, np.float64), np.asarray(rows, np.float64))
    lon, lat = _to_wgs84(crs)(xs, ys)
    return np.stack([np.atleast_1d(lat), np.atleast_1d(lon)], 1)


def read_raster(path):
    """A whole small raster: (pixels (H, W, bands) in its own dtype, crs, transform); crs and
    transform are None without georeferencing. For tiles (data_prep); scenes use open_scene."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            a = np.moveaxis(ds.read(), 0, -1)
            georef = ds.crs is not None and not ds.transform.is_identity
            return a, (ds.crs if georef else None), (ds.transform if georef else None)


def _apply(t: Affine, cols: np.ndarray, rows: np.ndarray):
    """CRS coordinates of pixel positions (column, row) under geotransform `t`."""
    return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f


@functools.lru_cache(maxsize=8)
def _transformer(wkt: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(wkt), WGS84, always_xy=True)


def _to_wgs84(crs: CRS):
    return _transformer(crs.to_wkt()).transform


def _check_crs(name: str, crs: CRS, transform: Affine, height: int, width: int) -> None:
    """InputError unless the corners and centre of the scene transform to finite lat/lon."""
    try:
        fn = _to_wgs84(crs)
        xs, ys = _apply(transform, np.array([0, width, 0, width, width / 2]),
                        np.array([0, 0, height, height, height / 2]))
        lon, lat = fn(xs, ys, errcheck=True)
    except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError) as e:
        raise InputError(f"{name}: its CRS ({crs.to_string() or 'custom'}) cannot be transformed to "
                         f"EPSG:4326 lat/lon ({str(e).splitlines()[0]}); reproject it first") from None
    if not (np.isfinite(lat).all() and np.isfinite(lon).all() and (np.abs(lat) <= 90).all()):
        raise InputError(f"{name}: its CRS ({crs.to_string()}) gives no valid lat/lon for the scene's "
                         "extent; reproject it first")


def open_scene(path, coords=None, tile: int = 0, scale: float = 1.0) -> Scene:
    """A GeoTIFF file or an XYZ folder (z/x/y.png at one zoom) as a Scene. `coords` (lat, lon)
    stands in for missing georeferencing; `tile` (pixels) is the smallest usable side; `scale`
    resamples a GeoTIFF (output pixels per input pixel: scene GSD / model GSD)."""
    p = pathlib.Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder (expected a GeoTIFF or an XYZ folder z/x/y.png)")
    if p.is_dir() and scale != 1.0:
        raise InputError(f"{p}: --gsd resampling is for GeoTIFF scenes, not XYZ folders")
    scene = _open_xyz(p) if p.is_dir() else _open_geotiff(p, coords, scale)
    if scene.height < tile or scene.width < tile:
        scene.close()
        raise InputError(f"{p}: scene is {scene.width}×{scene.height} px, smaller than one "
                         f"{tile}×{tile} tile of the model")
    return scene


def _open_geotiff(p: pathlib.Path, coords, scale: float) -> Scene:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(p)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"{p}: not a readable raster ({str(e).splitlines()[0]})") from None
    name, src = str(p), ds
    try:
        if ds.count not in (3, 4):
            raise InputError(f"{name}: {ds.count} band(s); expected 3 (RGB) or 4 (RGBA, alpha ignored)")
        georef = ds.crs is not None and not ds.transform.is_identity
        if not georef and coords is None:
            raise InputError(f"{name}: not georeferenced (no CRS/geotransform); give --coords LAT,LON")
        if scale != 1.0:
            if not georef:
                raise InputError(f"{name}: --gsd resampling needs a georeferenced scene")
            # GDAL resamples each window as it is read: the scene is never held whole
            src = WarpedVRT(ds, crs=ds.crs, transform=ds.transform @ Affine.scale(1 / scale),
                            width=max(1, round(ds.width * scale)), height=max(1, round(ds.height * scale)),
                            resampling=Resampling.bilinear)
        crs, transform = (src.crs, src.transform) if georef else (None, None)
        if georef:
            _check_crs(name, crs, transform, src.height, src.width)
        lohi = None
        if ds.dtypes[0] != "uint8":
            f = max(1, math.ceil(max(src.height, src.width) / STATS_SIDE))
            small = src.read((1, 2, 3), out_shape=(3, max(1, src.height // f), max(1, src.width // f)))
            lohi = stretch_range(small)
    except Exception:
        if src is not ds:
            src.close()
        ds.close()
        raise

    def read(y0, x0, h, w):
        a = src.read((1, 2, 3), window=Window(x0, y0, w, h))
        a = np.moveaxis(a, 0, -1)
        return stretch(a, *lohi) if lohi else np.ascontiguousarray(a)

    def close():
        if src is not ds:
            src.close()
        ds.close()

    return Scene(name, src.height, src.width, crs, transform, read, coords=coords, close=close)


def _open_xyz(p: pathlib.Path) -> Scene:
    zooms = [d for d in p.iterdir() if d.is_dir() and d.name.isdigit()]
    if len(zooms) != 1:
        raise InputError(f"{p}: an XYZ folder needs exactly one zoom level z/x/y.png, found {len(zooms)}")
    z = int(zooms[0].name)
    found = {(int(f.parent.name), int(f.stem)): f for f in zooms[0].glob("*/*.png")
             if f.parent.name.isdigit() and f.stem.isdigit()}
    if not found:
        raise InputError(f"{p}: no z/x/y.png tiles")
    xs, ys = [k[0] for k in found], [k[1] for k in found]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    missing = [(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1) if (x, y) not in found]
    if missing:
        raise InputError(f"{p}: tile {z}/{missing[0][0]}/{missing[0][1]}.png missing; the tiles must "
                         "fill a rectangle")
    first = images.read_image(found[(x0, y0)])
    n = first.shape[0]
    if first.shape[1] != n:
        raise InputError(f"{found[(x0, y0)]}: XYZ tiles must be square")

    @functools.lru_cache(maxsize=64)
    def tile(x, y):
        a = images.read_image(found[(x, y)])
        if a.shape[:2] != (n, n):
            raise InputError(f"{found[(x, y)]}: {a.shape[1]}×{a.shape[0]} px; the other tiles are {n}×{n}")
        return a

    def read(ya, xa, h, w):
        out = np.empty((h, w, 3), np.uint8)
        for ty in range(ya // n, (ya + h - 1) // n + 1):
            for tx in range(xa // n, (xa + w - 1) // n + 1):
                a = tile(x0 + tx, y0 + ty)
                sy, sx = max(ya, ty * n), max(xa, tx * n)
                ey, ex = min(ya + h, (ty + 1) * n), min(xa + w, (tx + 1) * n)
                out[sy - ya:ey - ya, sx - xa:ex - xa] = a[sy - ty * n:ey - ty * n, sx - tx * n:ex - tx * n]
        return out

    west, _, _, north = xyz.tile_bounds(z, x0, y0)
    mx, my = xyz.latlon_to_mercator(north, west)
    px = 2 * xyz.MAX_MERCATOR / 2**z / n
    transform = Affine(px, 0.0, mx, 0.0, -px, my)
    return Scene(str(p), (y1 - y0 + 1) * n, (x1 - x0 + 1) * n, CRS.from_epsg(3857), transform, read,
                 xyz_grid=(z, x0, y0, n))


def write_geotiff(path, height: int, width: int, crs, transform, blocks) -> None:
    """Atomic RGB uint8 GeoTIFF from `blocks`: an iterable of (y0, x0, uint8 (h, w, 3))."""
    with files.atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        profile = dict(driver="GTiff", height=height, width=width, count=3, dtype="uint8",
                       photometric="RGB", compress="deflate", tiled=True, blockxsize=256, blockysize=256)
        if crs is not None:
            profile.update(crs=crs, transform=transform)
        with rasterio.open(tmp, "w", **profile) as dst:
            for y0, x0, a in blocks:
                dst.write(np.moveaxis(a, -1, 0), window=Window(x0, y0, a.shape[1], a.shape[0]))


def write_preview(path, tif, max_side: int = 2048) -> None:
    """PNG of a GeoTIFF, decimated (GDAL nearest) to at most max_side pixels on its long side."""
    with rasterio.open(tif) as ds:
        f = max(1, math.ceil(max(ds.height, ds.width) / max_side))
        a = ds.read(out_shape=(3, max(1, ds.height // f), max(1, ds.width // f)))
    images.write_image(path, np.moveaxis(a, 0, -1))


def write_xyz(out_dir, tif, scene: Scene, overwrite: bool) -> None:
    """Cuts a GeoTIFF laid on `scene`'s XYZ grid into z/x/y.png, as one atomic folder."""
    z, x0, y0, n = scene.xyz_grid
    try:
        with files.atomic_dir(out_dir, overwrite=overwrite) as stage, rasterio.open(tif) as ds:
            for ty in range(scene.height // n):
                for tx in range(scene.width // n):
                    a = np.moveaxis(ds.read(window=Window(tx * n, ty * n, n, n)), 0, -1)
                    d = stage / str(z) / str(x0 + tx)
                    d.mkdir(parents=True, exist_ok=True)
                    images.write_image(d / f"{y0 + ty}.png", a)
    except FileExistsError:
        raise InputError(f"{out_dir}: exists; pass --overwrite to replace it") from None
