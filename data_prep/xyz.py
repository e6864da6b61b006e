"""XYZ (slippy-map) tile indices <-> WGS84 through spherical Web Mercator (EPSG:3857)."""

import math

EARTH_RADIUS = 6378137.0  # EPSG:3857 sphere (metres)
MAX_MERCATOR = math.pi * EARTH_RADIUS


def tile_centre(z: int, x: int, y: int) -> tuple[float, float]:
    """(lat, lon) in degrees of the centre of tile z/x/y (the Mercator centre of the tile)."""
    check_tile(z, x, y)
    n = 2**z
    lon = (x + 0.5) / n * 360.0 - 180.0
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (y + 0.5) / n))))
    return lat, lon


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(west, south, east, north) of tile z/x/y in degrees."""
    check_tile(z, x, y)
    n = 2**z
    lat = lambda t: math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * t / n))))  # noqa: E731
    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


def latlon_to_tile(lat: float, lon: float, z: int) -> tuple[int, int]:
    """(x, y) of the zoom-z tile that contains (lat, lon)."""
    n = 2**z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def mercator_to_latlon(mx: float, my: float) -> tuple[float, float]:
    """EPSG:3857 metres -> (lat, lon) degrees."""
    lon = math.degrees(mx / EARTH_RADIUS)
    lat = math.degrees(2 * math.atan(math.exp(my / EARTH_RADIUS)) - math.pi / 2)
    return lat, lon


def latlon_to_mercator(lat: float, lon: float) -> tuple[float, float]:
    """(lat, lon) degrees -> EPSG:3857 metres (mx, my)."""
    return EARTH_RADIUS * math.radians(lon), EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def check_tile(z: int, x: int, y: int) -> None:
    if not (0 <= z <= 30 and 0 <= x < 2**z and 0 <= y < 2**z):
        raise ValueError(f"not a valid XYZ tile: z={z} x={x} y={y} (need 0 <= x, y < 2**z)")
