"""Procedural synthetic city: aligned satellite/map tile pairs for tests, the demo and smoke runs.

A tile's *layout* (roads on a rotated grid plus curved roads, rivers/lakes, parks, buildings
in the blocks) is drawn from the seed in normalised [0, 1]² coordinates, so any pixel size
renders the same place. The *map* is a pure function of the layout (flat OSM/Google-like
colours), which makes map <-> satellite learnable; the *satellite* adds its own seeded
texture randomness (ground noise, tree canopy, water ripples, asphalt, roof colours, shadows,
colour jitter). Each tile has a (lat, lon) inside a bbox; the city is denser near the bbox
centre and greener/wetter towards its edges, so coordinates carry information too.

    pair = make_pair(7, size=256)                 # Pair(satellite, map, lat, lon, tile_id)
    batch = make_batch(8, 128, seed=0)            # sat_image/map_image in [-1, 1] + coords
    pairs = generate_many(1000, 256, seed=0, workers=2)

Its ~450 lines stay one module: layout, rasterisation and texturing share the class labels and
colour tables, and splitting them would spread one generator over files.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from earthmapper_jax.io.images import to_float
from earthmapper_jax.parallel import ordered_imap

# Somewhere in China: a window around central Beijing (lat0, lon0, lat1, lon1).
DEFAULT_BBOX = (39.80, 116.20, 40.05, 116.55)

# Map style (flat colours, close to OSM / Google map tiles).
MAP_BACKGROUND = (242, 239, 233)
MAP_PARK = (200, 230, 180)
MAP_WATER = (170, 211, 223)
MAP_BUILDING = (217, 208, 201)
MAP_BUILDING_EDGE = (188, 178, 168)
MAP_MINOR_ROAD = (255, 255, 255)
MAP_MINOR_EDGE = (206, 200, 190)
MAP_MAJOR_ROAD = (252, 214, 134)
MAP_MAJOR_EDGE = (226, 170, 92)

# Class labels of the shared rasterisation (satellite texturing is keyed on them).
BG, PARK, WATER, BUILDING, MINOR, MAJOR = range(6)

ROOF_PALETTE = np.array(
    [
        (176, 176, 172),
        (150, 84, 64),
        (118, 118, 124),
        (212, 206, 196),
        (92, 112, 134),
        (168, 148, 118),
        (196, 190, 180),
        (128, 96, 80),
    ],
    np.float32,
)


class Pair(NamedTuple):
    """One aligned tile: images are uint8 (H, W, 3); lat/lon of the tile centre (degrees)."""

    satellite: np.ndarray
    map: np.ndarray
    lat: float
    lon: float
    tile_id: str


@dataclasses.dataclass(frozen=True)
class Road:
    points: np.ndarray  # (N, 2) normalised (x, y)
    width: float  # normalised
    major: bool


@dataclasses.dataclass(frozen=True)
class Layout:
    """Geometry of one tile in normalised coordinates; `urban` in [0, 1] (1 = city centre)."""

    lat: float
    lon: float
    urban: float
    roads: tuple
    water_polys: tuple
    water_lines: tuple  # (points, width)
    parks: tuple
    buildings: tuple  # (4, 2) corner arrays


def tile_id(seed: int) -> str:
    return f"syn-{seed:010d}"


def pair_seed(seed: int, index: int) -> int:
    """Seed of the index-th pair of a data set drawn with `seed` (distinct, order-free)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


# ----------------------------------------------------------------------------- layout


def _rot(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _curve(rng, n=48):
    """A gently curved polyline crossing the tile (extends past its edges)."""
    p0 = rng.uniform(0.1, 0.9, 2)
    ang = rng.uniform(0, np.pi)
    d = np.array([np.cos(ang), np.sin(ang)])
    nrm = np.array([-d[1], d[0]])
    t = np.linspace(-1.0, 1.0, n)[:, None]
    amp, freq, ph = rng.uniform(0.04, 0.15), rng.uniform(0.3, 1.0), rng.uniform(0, 2 * np.pi)
    return p0 + t * d * 1.0 + nrm * amp * np.sin(2 * np.pi * freq * t + ph)


def _blob(rng, centre, radius, n=40):
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(phi)
    for k in (2, 3, 5):
        r += rng.uniform(0, 0.25 / k * 2) * np.sin(k * phi + rng.uniform(0, 2 * np.pi))
    return centre + radius * r[:, None] * np.stack([np.cos(phi), np.sin(phi)], 1)


def make_layout(seed: int, bbox=DEFAULT_BBOX) -> Layout:
    """Draws the geometry of tile `seed` (deterministic)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    lat0, lon0, lat1, lon1 = bbox
    fy, fx = rng.random(2)
    lat, lon = lat0 + fy * (lat1 - lat0), lon0 + fx * (lon1 - lon0)
    urban = float(np.exp(-((fx - 0.5) ** 2 + (fy - 0.5) ** 2) / 0.12))

    roads, water_polys, water_lines, parks, buildings = [], [], [], [], []

    # Street grid in a frame rotated by theta around the tile centre.
    theta = 0.0 if rng.random() < 0.3 + 0.4 * urban else rng.uniform(-0.6, 0.6)
    rot = _rot(theta)
    spacing = rng.uniform(0.22, 0.32) + 0.15 * (1 - urban) * rng.random()
    keep_line = 0.55 + 0.4 * urban
    offs = rng.uniform(0, spacing, 2)
    grid_u = np.arange(-1.0 + offs[0], 1.0, spacing)
    grid_v = np.arange(-1.0 + offs[1], 1.0, spacing)
    kept_u = grid_u[rng.random(len(grid_u)) < keep_line]
    kept_v = grid_v[rng.random(len(grid_v)) < keep_line]
    to_img = lambda uv: uv @ rot.T + 0.5  # noqa: E731
    for axis, lines in ((0, kept_u), (1, kept_v)):
        for c in lines:
            major = rng.random() < 0.25
            seg = np.array([[c, -1.0], [c, 1.0]]) if axis == 0 else np.array([[-1.0, c], [1.0, c]])
            w = rng.uniform(0.035, 0.05) if major else rng.uniform(0.016, 0.024)
            roads.append(Road(to_img(seg), w, major))

    # Curved roads, more of them outside the centre.
    for _ in range(rng.binomial(2, 0.2 + 0.4 * (1 - urban))):
        major = rng.random() < 0.4
        w = rng.uniform(0.035, 0.05) if major else rng.uniform(0.016, 0.024)
        roads.append(Road(_curve(rng), w, major))

    # Water: a river or a lake, likelier on the outskirts.
    if rng.random() < 0.15 + 0.45 * (1 - urban):
        if rng.random() < 0.5:
            water_lines.append((_curve(rng), rng.uniform(0.06, 0.16)))
        else:
            water_polys.append(_blob(rng, rng.uniform(0.15, 0.85, 2), rng.uniform(0.1, 0.25)))

    # Occupancy of water and curved roads (buildings must not sit on them).
    occ_res = 96
    occ = Image.new("1", (occ_res, occ_res), 0)
    od = ImageDraw.Draw(occ)
    for pts in water_polys:
        od.polygon([tuple(p) for p in pts * occ_res], fill=1)
    for pts, w in water_lines:
        od.line([tuple(p) for p in pts * occ_res], fill=1, width=max(1, int(w * occ_res + 2)))
    for r in roads[len(kept_u) + len(kept_v):]:
        od.line([tuple(p) for p in r.points * occ_res], fill=1, width=max(1, int(r.width * occ_res + 3)))
    occ = np.asarray(occ, bool)

    def free(corners):
        pts = np.concatenate([corners, corners.mean(0, keepdims=True)])
        ij = np.clip((pts * occ_res).astype(int), 0, occ_res - 1)
        return not occ[ij[:, 1], ij[:, 0]].any()

    # Blocks between consecutive kept grid lines (plus the tile's outer area).
    bu = np.concatenate([[-1.0], kept_u, [1.0]])
    bv = np.concatenate([[-1.0], kept_v, [1.0]])
    park_p = 0.08 + 0.3 * (1 - urban)
    fill_p = 0.6 + 0.38 * urban
    for i in range(len(bu) - 1):
        for j in range(len(bv) - 1):
            u0, u1, v0, v1 = bu[i] + 0.03, bu[i + 1] - 0.03, bv[j] + 0.03, bv[j + 1] - 0.03
            if u1 - u0 < 0.05 or v1 - v0 < 0.05:
                continue
            # Skip blocks wholly outside the tile (the grid frame covers more than the tile).
            corners = to_img(np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]))
            if corners.max() < -0.05 or corners.min() > 1.05 or (
                (corners[:, 0].max() < 0) or (corners[:, 0].min() > 1)
                or (corners[:, 1].max() < 0) or (corners[:, 1].min() > 1)
            ):
                continue
            if rng.random() < park_p:
                parks.append(corners)
                continue
            if rng.random() < 0.2 * urban:  # one large building (mall, plant) fills the block
                big = to_img(np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]) * 0.9
                             + np.array([[u0 + u1, v0 + v1]]) * 0.05)
                if free(big):
                    buildings.append(big)
                continue
            b = rng.uniform(0.035, 0.06) + 0.045 * urban * rng.random()
            gap = rng.uniform(0.012, 0.03)
            nu, nv = int((u1 - u0 + gap) // (b + gap)), int((v1 - v0 + gap) // (b + gap))
            if nu < 1 or nv < 1:
                continue
            # Buildings along the block's edges (courtyard inside), like city blocks.
            for a in range(nu):
                for c in range(nv):
                    if 0 < a < nu - 1 and 0 < c < nv - 1 and rng.random() < 0.5:
                        continue
                    if rng.random() > fill_p:
                        continue
                    bu0 = u0 + a * (b + gap)
                    bv0 = v0 + c * (b + gap)
                    su, sv = b * rng.uniform(0.7, 1.0), b * rng.uniform(0.7, 1.0)
                    rect = np.array([[bu0, bv0], [bu0 + su, bv0], [bu0 + su, bv0 + sv], [bu0, bv0 + sv]])
                    corners_b = to_img(rect)
                    if free(corners_b):
                        buildings.append(corners_b)

    return Layout(
        lat=float(lat), lon=float(lon), urban=urban, roads=tuple(roads),
        water_polys=tuple(water_polys), water_lines=tuple(water_lines),
        parks=tuple(parks), buildings=tuple(buildings),
    )


# ----------------------------------------------------------------------------- rendering


def _xy(points, size):
    return [tuple(p) for p in (np.asarray(points) * size).tolist()]


def _w(width, size, extra=0.0):
    return max(1, int(round(width * size + extra)))


def _draw_geometry(draw, layout, size, colours, road_outline_px=0):
    """Draws the layout in paint order; colours[label] is a fill (or edge for *_EDGE keys)."""
    for pts in layout.parks:
        draw.polygon(_xy(pts, size), fill=colours[PARK])
    for pts in layout.water_polys:
        draw.polygon(_xy(pts, size), fill=colours[WATER])
    for pts, w in layout.water_lines:
        draw.line(_xy(pts, size), fill=colours[WATER], width=_w(w, size), joint="curve")
    for pts in layout.buildings:
        draw.polygon(_xy(pts, size), fill=colours[BUILDING], outline=colours.get("building_edge"))
    for major in (False, True):
        label = MAJOR if major else MINOR
        roads = [r for r in layout.roads if r.major == major]
        if road_outline_px:
            for r in roads:
                draw.line(_xy(r.points, size), fill=colours[("edge", label)],
                          width=_w(r.width, size, 2 * road_outline_px), joint="curve")
        for r in roads:
            draw.line(_xy(r.points, size), fill=colours[label], width=_w(r.width, size), joint="curve")


def render_map(layout: Layout, size: int) -> np.ndarray:
    """The map tile (uint8 (size, size, 3)): a deterministic function of the layout."""
    img = Image.new("RGB", (size, size), MAP_BACKGROUND)
    colours = {
        PARK: MAP_PARK, WATER: MAP_WATER, BUILDING: MAP_BUILDING, "building_edge": MAP_BUILDING_EDGE,
        MINOR: MAP_MINOR_ROAD, MAJOR: MAP_MAJOR_ROAD,
        ("edge", MINOR): MAP_MINOR_EDGE, ("edge", MAJOR): MAP_MAJOR_EDGE,
    }
    _draw_geometry(ImageDraw.Draw(img), layout, size, colours, road_outline_px=max(1, size // 256))
    return np.asarray(img)


def render_labels(layout: Layout, size: int) -> np.ndarray:
    """Class raster (uint8 (size, size)) with the labels BG..MAJOR."""
    img = Image.new("L", (size, size), BG)
    colours = {PARK: PARK, WATER: WATER, BUILDING: BUILDING, MINOR: MINOR, MAJOR: MAJOR}
    _draw_geometry(ImageDraw.Draw(img), layout, size, colours)
    return np.asarray(img)


def _noise(rng, size, cells):
    """Smooth value noise in [0, 1] (bicubic upsampling of a random grid)."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    out = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(out)


def _fbm(rng, size, cells=(4, 8, 16, 32), weights=(0.4, 0.3, 0.2, 0.1)):
    return sum(w * _noise(rng, size, min(c, size)) for c, w in zip(cells, weights))


def _dashes(points, size, dash, gap):
    """Splits a polyline (pixels) into dash segments of length `dash` separated by `gap`."""
    p = np.asarray(points, np.float64) * size
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    out = []
    for start in np.arange(0, s[-1], dash + gap):
        t = np.array([start, min(start + dash, s[-1])])
        out.append(np.stack([np.interp(t, s, p[:, 0]), np.interp(t, s, p[:, 1])], 1))
    return out


def render_satellite(layout: Layout, size: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """The aerial tile (uint8 (size, size, 3)): the layout with seeded texture randomness."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    if labels is None:
        labels = render_labels(layout, size)
    scale = size / 256.0
    n_fine = max(4, size // 4)

    # Ground: grass/soil mixture, greyer (concrete) in the centre of the city.
    mix = _fbm(rng, size)[..., None]
    grass = np.array([92, 108, 66], np.float32)
    soil = np.array([156, 140, 112], np.float32)
    concrete = np.array([150, 146, 138], np.float32)
    ground = grass + (soil - grass) * np.clip(mix * 1.6 - 0.3, 0, 1)
    ground = ground + (concrete - ground) * (0.75 * layout.urban)
    ground *= (0.85 + 0.3 * _noise(rng, size, n_fine))[..., None]

    # Tree canopy (parks): bright crowns over dark gaps.
    crowns = _noise(rng, size, max(4, size // 6))
    canopy = np.array([40, 62, 32], np.float32) + np.array([48, 56, 30], np.float32) * (
        np.clip(crowns * 1.8 - 0.5, 0, 1)[..., None]
    )
    canopy *= (0.85 + 0.3 * _noise(rng, size, 8))[..., None]

    # Water: dark teal with slow variation and fine ripples.
    water = np.array([38, 68, 80], np.float32) * (
        np.float32(0.85) + 0.25 * _noise(rng, size, 6) + 0.06 * _noise(rng, size, n_fine)
    )[..., None]

    # Asphalt (+ lane markings on major roads, drawn below).
    asphalt = np.float32(88) + 26 * _noise(rng, size, n_fine) + 4 * rng.standard_normal((size, size), np.float32)
    asphalt = np.repeat(asphalt[..., None], 3, axis=2) * np.array([1.0, 1.0, 1.04], np.float32)

    # Roofs: one colour per building (+ shadow mask from a per-tile sun direction).
    roof_img = Image.new("RGB", (size, size), (0, 0, 0))
    shadow_img = Image.new("L", (size, size), 0)
    rd, sd = ImageDraw.Draw(roof_img), ImageDraw.Draw(shadow_img)
    roof_palette = ROOF_PALETTE.tolist()
    sun = rng.uniform(0, 2 * np.pi)
    sun_dir = np.array([np.cos(sun), np.sin(sun)])
    for pts in layout.buildings:
        k = rng.uniform(0.85, 1.12)
        colour = tuple(min(255, int(c * k)) for c in roof_palette[rng.integers(len(roof_palette))])
        height = rng.uniform(0.006, 0.02 + 0.03 * layout.urban)
        # Shadow = the roof swept along the sun direction: shifted copy + one quad per edge.
        top = _xy(pts, size)
        low = _xy(pts + sun_dir * height, size)
        sd.polygon(low, fill=255)
        for e in range(len(top)):
            f = (e + 1) % len(top)
            sd.polygon([top[e], top[f], low[f], low[e]], fill=255)
        edge = tuple(int(c * 0.78) for c in colour)
        rd.polygon(_xy(pts, size), fill=colour, outline=edge)
    roofs = np.asarray(roof_img, np.float32) * (0.92 + 0.16 * _noise(rng, size, n_fine))[..., None]
    shadow = np.asarray(shadow_img) > 0

    # Composite by class with in-place masked assignment (float32 throughout: speed).
    sat = ground
    park, water_m = labels == PARK, labels == WATER
    road = (labels == MINOR) | (labels == MAJOR)
    sat[park] = canopy[park]
    sat[water_m] = water[water_m]
    shaded = shadow & ((labels == BG) | park)
    sat[shaded] *= 0.55
    sat[road] = asphalt[road] * np.where(shadow[road], 0.6, 1.0).astype(np.float32)[:, None]
    bmask = labels == BUILDING
    sat[bmask] = roofs[bmask]

    # Scattered trees and markings: randomness the map does not show.
    extras = Image.new("RGB", (size, size), (0, 0, 0))
    mask = Image.new("L", (size, size), 0)
    ed, md = ImageDraw.Draw(extras), ImageDraw.Draw(mask)
    n_trees = int(rng.poisson(60 * (1.2 - layout.urban)))
    for x, y in (rng.random((n_trees, 2)) * size).tolist():
        r = rng.uniform(1.0, 3.5) * scale
        g = rng.uniform(0.7, 1.2)
        ed.ellipse([x - r, y - r, x + r, y + r], fill=(int(44 * g), int(70 * g), int(36 * g)))
        md.ellipse([x - r, y - r, x + r, y + r], fill=1)
    for r in layout.roads:
        if r.major:
            for d in _dashes(r.points, size, 6 * scale, 5 * scale):
                ed.line([tuple(p) for p in d.tolist()], fill=(215, 210, 190), width=max(1, int(scale)))
                md.line([tuple(p) for p in d.tolist()], fill=2, width=max(1, int(scale)))
    emask = np.asarray(mask)
    sel = ((emask == 1) & (labels == BG)) | ((emask == 2) & (labels == MAJOR))
    sat[sel] = np.asarray(extras, np.float32)[sel]

    # Camera: per-channel gain, brightness, gamma (as a lookup table), sensor noise, blur.
    gain = rng.uniform(0.9, 1.1, 3).astype(np.float32) * np.float32(rng.uniform(0.85, 1.15))
    sat = np.clip(sat * gain + np.float32(rng.uniform(-10, 10)), 0, 255).astype(np.uint8)
    lut = (255.0 * (np.arange(256) / 255.0) ** rng.uniform(0.85, 1.15)).astype(np.int16)
    noisy = lut[sat] + (rng.standard_normal(sat.shape, dtype=np.float32) * 3.0).astype(np.int16)
    img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(0.55 * scale))
    return np.asarray(img)


# ----------------------------------------------------------------------------- public API


def make_pair(seed: int, size: int = 256, bbox=DEFAULT_BBOX) -> Pair:
    """Deterministic aligned pair for `seed`: satellite and map uint8 (size, size, 3)."""
    if size < 8:
        raise ValueError(f"synthetic tile size must be >= 8 pixels, got {size}")
    layout = make_layout(seed, bbox)
    labels = render_labels(layout, size)
    return Pair(
        satellite=render_satellite(layout, size, seed, labels),
        map=render_map(layout, size),
        lat=layout.lat,
        lon=layout.lon,
        tile_id=tile_id(seed),
    )


def _make_indexed(args):
    seed, index, size, bbox = args
    return make_pair(pair_seed(seed, index), size, bbox)


def iter_pairs(n: int, size: int = 256, seed: int = 0, workers: int = 1, bbox=DEFAULT_BBOX,
               start: int = 0) -> Iterator[Pair]:
    """Yields pairs start..start+n-1 of the data set `seed` in order (parallel if workers > 1)."""
    jobs = ((seed, i, size, bbox) for i in range(start, start + n))
    yield from ordered_imap(_make_indexed, jobs, workers, chunksize=16)


def generate_many(n: int, size: int = 256, seed: int = 0, workers: int = 1, bbox=DEFAULT_BBOX) -> list[Pair]:
    """n pairs of the data set `seed` (same result for any `workers`)."""
    return list(iter_pairs(n, size, seed, workers, bbox))


def make_batch(n: int, size: int = 256, seed: int = 0, bbox=DEFAULT_BBOX) -> dict:
    """A batch as the input pipeline emits it: sat_image/map_image float32 (n, size, size, 3)
    in [-1, 1], coords (n, 2) as (lat, lon)."""
    pairs = [_make_indexed((seed, i, size, bbox)) for i in range(n)]
    return {
        "sat_image": to_float(np.stack([p.satellite for p in pairs])),
        "map_image": to_float(np.stack([p.map for p in pairs])),
        "coords": np.array([(p.lat, p.lon) for p in pairs], np.float32),
    }

