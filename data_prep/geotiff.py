"""GeoTIFF tiles: pixels and the WGS84 centre from the GeoTIFF tags, read with `tifffile`.

Supported georeferencing: ModelPixelScale + ModelTiepoint, or ModelTransformation, in
EPSG:4326 (geographic degrees) or EPSG:3857 (Web Mercator metres; also 900913/3785/102100/102113).
"""

from __future__ import annotations

import numpy as np

from earthmapper_jax.data_prep import xyz

TAG_PIXEL_SCALE = 33550
TAG_TIEPOINT = 33922
TAG_TRANSFORMATION = 34264
TAG_GEOKEYS = 34735
KEY_MODEL_TYPE, KEY_RASTER_TYPE, KEY_GEOGRAPHIC, KEY_PROJECTED = 1024, 1025, 2048, 3072
WEB_MERCATOR_CODES = {3857, 900913, 3785, 102100, 102113}
GEOGRAPHIC_CODES = {4326}


class GeoTiffError(ValueError):
    """The file has no usable georeferencing (the message says why)."""


def _geokeys(value) -> dict[int, int]:
    v = [int(x) for x in value]
    keys = {}
    for i in range(v[3]):
        key, loc, _count, val = v[4 + 4 * i: 8 + 4 * i]
        if loc == 0:  # value stored inline (the only kind we need)
            keys[key] = val
    return keys


def centre_from_tags(tags: dict, width: int, height: int) -> tuple[float, float]:
    """(lat, lon) of the image centre from raw GeoTIFF tag values {code: value}."""
    keys = _geokeys(tags[TAG_GEOKEYS]) if TAG_GEOKEYS in tags else {}
    code = keys.get(KEY_PROJECTED) or keys.get(KEY_GEOGRAPHIC)
    model = keys.get(KEY_MODEL_TYPE)
    if code is None:
        code = 4326 if model == 2 else None
    if code not in WEB_MERCATOR_CODES | GEOGRAPHIC_CODES:
        raise GeoTiffError(f"unsupported CRS EPSG:{code} (supported: EPSG:4326, EPSG:3857)")
    # Pixel centre of the image in raster space; PixelIsPoint rasters put (0, 0) on a pixel centre.
    i, j = width / 2.0, height / 2.0
    if keys.get(KEY_RASTER_TYPE) == 2:
        i, j = i - 0.5, j - 0.5
    if TAG_TRANSFORMATION in tags:
        m = np.asarray(tags[TAG_TRANSFORMATION], np.float64).reshape(4, 4)
        x, y = m[0, 0] * i + m[0, 1] * j + m[0, 3], m[1, 0] * i + m[1, 1] * j + m[1, 3]
    elif TAG_PIXEL_SCALE in tags and TAG_TIEPOINT in tags:
        sx, sy = float(tags[TAG_PIXEL_SCALE][0]), float(tags[TAG_PIXEL_SCALE][1])
        ti, tj, _, tx, ty, _ = (float(v) for v in tags[TAG_TIEPOINT][:6])
        x, y = tx + (i - ti) * sx, ty - (j - tj) * sy
    else:
        raise GeoTiffError("no ModelPixelScale+ModelTiepoint or ModelTransformation tag")
    if code in WEB_MERCATOR_CODES:
        return xyz.mercator_to_latlon(x, y)
    return float(y), float(x)


def _to_rgb_uint8(a: np.ndarray, axes: str) -> np.ndarray:
    if "S" in axes and axes.index("S") < axes.index("Y"):  # planar: (S, Y, X)
        a = np.moveaxis(a, axes.index("S"), -1)
    a = np.squeeze(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    a = a[..., :3]
    if a.shape[-1] < 3:
        a = np.concatenate([a, np.repeat(a[..., -1:], 3 - a.shape[-1], axis=2)], axis=2)
    if a.dtype != np.uint8:
        # Deeper rasters (uint16 sensors, float reflectance): a 2-98 percentile stretch.
        a = a.astype(np.float64)
        lo, hi = np.nanpercentile(a, 2), np.nanpercentile(a, 98)
        a = np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255)
        a = np.nan_to_num(a).astype(np.uint8)
    return np.ascontiguousarray(a)


def read_geotiff(path) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """(uint8 (H, W, 3) image, (lat, lon) or None, why-not message or "")."""
    import tifffile  # optional dependency (extra "geo"): only GeoTIFF tiles need it

    with tifffile.TiffFile(str(path)) as tif:
        page = tif.pages[0]
        tags = {t.code: t.value for t in page.tags.values()}
        image = _to_rgb_uint8(page.asarray(), page.axes)
    try:
        centre = centre_from_tags(tags, image.shape[1], image.shape[0])
        return image, centre, ""
    except (GeoTiffError, KeyError, IndexError, ValueError, TypeError) as e:
        return image, None, str(e)


def write_geotiff(path, image: np.ndarray, bounds: tuple[float, float, float, float], epsg: int = 4326) -> None:
    """Writes uint8 (H, W, 3) `image` georeferenced to `bounds` = (west, south, east, north) in
    the CRS's units (degrees for 4326, metres for 3857). Used for fixtures and exports."""
    import tifffile

    h, w = image.shape[:2]
    west, south, east, north = bounds
    geographic = epsg in GEOGRAPHIC_CODES
    keys = [1, 1, 0, 3,
            KEY_MODEL_TYPE, 0, 1, 2 if geographic else 1,
            KEY_RASTER_TYPE, 0, 1, 1,
            KEY_GEOGRAPHIC if geographic else KEY_PROJECTED, 0, 1, epsg]
    tifffile.imwrite(
        str(path), np.asarray(image, np.uint8), photometric="rgb",
        extratags=[
            (TAG_PIXEL_SCALE, "d", 3, ((east - west) / w, (north - south) / h, 0.0), False),
            (TAG_TIEPOINT, "d", 6, (0.0, 0.0, 0.0, west, north, 0.0), False),
            (TAG_GEOKEYS, "H", len(keys), keys, False),
        ],
    )
