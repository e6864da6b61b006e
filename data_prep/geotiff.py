"""GeoTIFF tiles: pixels and the WGS84 centre, read with rasterio + pyproj (the readers
`translate-area` uses, earthmapper_jax/area/raster.py): any CRS pyproj takes to lat/lon.
`write_geotiff` (fixtures, exports) writes EPSG:4326 / 3857 tags with `tifffile`.
"""

from __future__ import annotations

import numpy as np

TAG_PIXEL_SCALE = 33550
TAG_TIEPOINT = 33922
TAG_GEOKEYS = 34735
KEY_MODEL_TYPE, KEY_RASTER_TYPE, KEY_GEOGRAPHIC, KEY_PROJECTED = 1024, 1025, 2048, 3072
GEOGRAPHIC_CODES = {4326}


def read_geotiff(path) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """(uint8 (H, W, 3) image, (lat, lon) of its centre or None, why-not message or "")."""
    # The geo extra (rasterio, pyproj), imported here: only GeoTIFF tiles need it, and
    # `earthmapper prepare` of PNG/JPEG folders must run without it.
    import pyproj

    from earthmapper_jax.area import raster

    a, crs, transform = raster.read_raster(path)
    if a.shape[-1] < 3:  # grey (+ alpha): the first band repeated
        a = np.repeat(a[..., :1], 3, axis=2)
    image = a[..., :3]
    if image.dtype != np.uint8:  # uint16 sensors, float reflectance: 2-98 percentile stretch
        image = raster.stretch(image, *raster.stretch_range(image))
    image = np.ascontiguousarray(image)
    if crs is None:
        return image, None, "not georeferenced (no CRS / geotransform)"
    try:
        lat, lon = raster.latlon(crs, transform, [a.shape[1] / 2.0], [a.shape[0] / 2.0])[0]
    except pyproj.exceptions.ProjError as e:
        return image, None, f"CRS {crs.to_string()} cannot be transformed to lat/lon ({e})"
    if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90):
        return image, None, f"CRS {crs.to_string()} gives no valid lat/lon for the centre"
    return image, (float(lat), float(lon)), ""


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
