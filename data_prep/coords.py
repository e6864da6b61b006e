"""Where a tile's (lat, lon) comes from: a CSV/JSON sidecar, the file name, XYZ tile indices in
the path, or GeoTIFF tags (resolved while loading, see data_prep.geotiff).

Sidecars
  CSV with a header, or JSON (a list of objects, or an object keyed by tile name whose values
  are objects or [lat, lon] pairs). Columns / keys (case-insensitive):
    name     one of tile_id, id, name, file, filename, image, path   (matched against the
             tile key `dir/stem`, the file name, or the stem)
    centre   lat|latitude and lon|lng|long|longitude                 (degrees), or
    bounds   west,south,east,north  or  min_lon,min_lat,max_lon,max_lat   (degrees; centre used)
    city     optional;  split  optional (train/val/test)
"""

from __future__ import annotations

import csv
import json
import math
import os
import re

from earthmapper_jax.data_prep import xyz
from earthmapper_jax.errors import DataError, InputError

# `..._29.62732_-95.41556.png`, optionally with a city: `000002_Houston_29.62732_-95.41556.png`.
# Decimal points are required so that z_x_y tile names are never read as coordinates.
DEFAULT_NAME_PATTERN = (
    r"(?:^|[_\-])(?:(?P<city>[A-Za-z][A-Za-z\-]*)_)?"
    r"(?P<lat>[-+]?\d{1,2}\.\d+)[_,](?P<lon>[-+]?\d{1,3}\.\d+)$"
)
# z/x/y directories or a z_x_y (z-x-y) file name at the end of the tile key.
DEFAULT_XYZ_PATTERN = r"(?:^|[/_\-])(?P<z>\d{1,2})[/_\-](?P<x>\d+)[/_\-](?P<y>\d+)$"

SIDECAR_NAMES = ("metadata", "coords", "coordinates", "tiles", "meta", "index")
COORD_MODES = ("auto", "sidecar", "filename", "xyz", "geotiff", "none")

_NAME_KEYS = ("tile_id", "id", "name", "file", "filename", "image", "path")


class SidecarError(DataError, ValueError):
    """A sidecar file is malformed (the message names file and entry)."""


def find_sidecar(root) -> str | None:
    """A sidecar file directly under `root` with one of the conventional names, if any."""
    for name in SIDECAR_NAMES:
        for ext in (".csv", ".json"):
            path = os.path.join(str(root), name + ext)
            if os.path.isfile(path):
                return path
    return None


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _entry(row: dict, where: str) -> dict:
    low = {str(k).strip().lower(): v for k, v in row.items()}
    lat = next((_num(low[k]) for k in ("lat", "latitude") if k in low), math.nan)
    lon = next((_num(low[k]) for k in ("lon", "lng", "long", "longitude") if k in low), math.nan)
    for w, s, e, n in (("west", "south", "east", "north"), ("min_lon", "min_lat", "max_lon", "max_lat")):
        if math.isnan(lat) and all(k in low for k in (w, s, e, n)):
            lat, lon = (_num(low[s]) + _num(low[n])) / 2, (_num(low[w]) + _num(low[e])) / 2
    if not (math.isnan(lat) or -90 <= lat <= 90) or not (math.isnan(lon) or -180 <= lon <= 180):
        raise SidecarError(f"{where}: latitude/longitude out of range ({lat}, {lon})")
    return {"lat": lat, "lon": lon, "city": str(low.get("city") or ""), "split": str(low.get("split") or "")}


class Sidecar:
    """Per-tile metadata loaded from a CSV or JSON file."""

    def __init__(self, path):
        self.path = str(path)
        self.entries: dict[str, dict] = {}
        try:
            for n, (name, row) in enumerate(self._rows()):
                if not name:
                    raise SidecarError(f"{self.path}: entry {n} has no name column ({'/'.join(_NAME_KEYS)})")
                self.entries[_norm(name)] = _entry(row, f"{self.path}: entry {n}")
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
            if isinstance(e, SidecarError):
                raise
            raise SidecarError(f"{self.path}: not a readable sidecar ({type(e).__name__}: {e})") from None

    def _rows(self):
        if self.path.lower().endswith(".json"):
            with open(self.path) as f:
                data = json.load(f)
            if isinstance(data, dict):
                for name, v in data.items():
                    yield name, (v if isinstance(v, dict) else {"lat": v[0], "lon": v[1]})
            else:
                for row in data:
                    yield _name(row), row
        else:
            with open(self.path, newline="") as f:
                for row in csv.DictReader(f):
                    yield _name(row), row

    def lookup(self, key: str, filename: str) -> dict | None:
        """Entry for a tile by its key (`dir/stem`), file name, or stem."""
        stem = os.path.splitext(filename)[0]
        for cand in (key, filename, stem, key.rsplit("/", 1)[-1]):
            hit = self.entries.get(_norm(cand))
            if hit is not None:
                return hit
        return None


def _name(row: dict) -> str:
    low = {str(k).strip().lower(): v for k, v in row.items()}
    return next((str(low[k]) for k in _NAME_KEYS if low.get(k) not in (None, "")), "")


def _norm(name: str) -> str:
    return str(name).strip().replace("\\", "/").lstrip("./").lower()


def from_filename(stem: str, pattern: re.Pattern) -> tuple[float, float, str] | None:
    """(lat, lon, city) from a file stem via `pattern` (named groups lat, lon, optional city)."""
    m = pattern.search(stem)
    if not m:
        return None
    lat, lon = float(m.group("lat")), float(m.group("lon"))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    city = m.groupdict().get("city") or ""
    return lat, lon, city


def from_xyz(key: str, pattern: re.Pattern) -> tuple[float, float] | None:
    """Centre (lat, lon) of the XYZ tile named by the end of `key` (groups z, x, y)."""
    m = pattern.search(key)
    if not m:
        return None
    z, x, y = int(m.group("z")), int(m.group("x")), int(m.group("y"))
    try:
        return xyz.tile_centre(z, x, y)
    except ValueError:
        return None


class CoordResolver:
    """Applies the `--coords` mode to each tile during listing (GeoTIFF is left to the loader)."""

    def __init__(self, mode: str = "auto", sidecar: str | None = None, name_pattern: str | None = None,
                 xyz_pattern: str | None = None):
        if mode not in COORD_MODES:
            raise InputError(f"coords mode must be one of {COORD_MODES}, got {mode!r}")
        if mode == "sidecar" and not sidecar:
            raise SidecarError("--coords sidecar needs --sidecar FILE (or a metadata.csv/json in the root)")
        self.mode = mode
        self.sidecar = Sidecar(sidecar) if sidecar and mode in ("auto", "sidecar") else None
        try:
            self.name_re = re.compile(name_pattern or DEFAULT_NAME_PATTERN)
            self.xyz_re = re.compile(xyz_pattern or DEFAULT_XYZ_PATTERN)
        except re.error as e:
            raise InputError(f"invalid --name-pattern/--xyz-pattern regex: {e}") from None
        for group, rx in (("lat", self.name_re), ("lon", self.name_re), ("z", self.xyz_re),
                          ("x", self.xyz_re), ("y", self.xyz_re)):
            if group not in rx.groupindex:
                raise InputError(f"pattern {rx.pattern!r} lacks the named group (?P<{group}>...)")

    def resolve(self, key: str, filename: str) -> dict:
        """{'lat', 'lon', 'source', 'city', 'split'}; source '' when unknown (or for GeoTIFF)."""
        out = {"lat": math.nan, "lon": math.nan, "source": "", "city": "", "split": ""}
        mode = self.mode
        if self.sidecar is not None:
            hit = self.sidecar.lookup(key, filename)
            if hit is not None:
                out.update(city=hit["city"], split=hit["split"])
                if not math.isnan(hit["lat"]):
                    out.update(lat=hit["lat"], lon=hit["lon"], source="sidecar")
                    return out
        if mode in ("auto", "filename"):
            # The key's last part has the modality prefix/suffix removed (`x_29.6_-95.4_sat`).
            got = (from_filename(key.rsplit("/", 1)[-1], self.name_re)
                   or from_filename(os.path.splitext(filename)[0], self.name_re))
            if got:
                out.update(lat=got[0], lon=got[1], source="filename", city=out["city"] or got[2])
                return out
        if mode in ("auto", "xyz"):
            got = from_xyz(key, self.xyz_re)
            if got:
                out.update(lat=got[0], lon=got[1], source="xyz")
        return out
