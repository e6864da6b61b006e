"""Per-element steps of the input pipeline: parse + decode a record, paired augmentation (the
same crop/flip/rotation for satellite and map), resize and normalise to [-1, 1].

An element is a dict: sat_image, map_image (uint8 (H, W, 3), then float32 in [-1, 1]),
coords float32 (2,) as (lat, lon), tile_id str. These keys stay the same up to the loss."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from earthmapper_jax.data import example
from earthmapper_jax.data.source import RawRecord, note_skip
from earthmapper_jax.errors import DataError
from earthmapper_jax.io.images import to_float

IMAGE_KEYS = ("sat_image", "map_image")


@dataclasses.dataclass(frozen=True)
class Augment:
    """Paired augmentation. `crop_scale`: side of the random square crop as a fraction of the
    tile (then resized back); `rot90`: random multiples of 90 degrees."""

    crop_scale: tuple[float, float] = (0.8, 1.0)
    hflip: bool = True
    vflip: bool = False
    rot90: bool = True


def resolve_augment(augment) -> Augment | None:
    if augment is True:
        return Augment()
    if augment in (False, None):
        return None
    if isinstance(augment, Augment):
        return augment
    if isinstance(augment, dict):
        return Augment(**augment)
    raise ValueError(f"augment must be a bool, an Augment or a dict, got {augment!r}")


@dataclasses.dataclass(frozen=True)
class DecodePair:
    """RawRecord -> dict(sat_image, map_image uint8 (H, W, 3), coords float32 (2,), tile_id str)."""

    on_error: str = "raise"

    def __call__(self, raw: RawRecord):
        where = f"{raw.shard}: record {raw.index}"
        try:
            rec = example.parse(raw.data, where)
            sat = example.decode_image(rec.satellite, f"{where} satellite")
            mp = example.decode_image(rec.map, f"{where} map")
            if sat.shape != mp.shape:
                raise DataError(f"{where}: satellite {sat.shape[:2]} and map {mp.shape[:2]} sizes differ")
        except DataError as e:
            if self.on_error == "skip":
                note_skip("undecodable_record", str(e))
                return None
            raise
        return {
            "sat_image": sat,
            "map_image": mp,
            "coords": np.array([rec.latitude, rec.longitude], np.float32),
            "tile_id": rec.tile_id,
        }


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))


@dataclasses.dataclass(frozen=True)
class Finalise:
    """Resize to `image_size` (None: keep) and normalise both images to float32 [-1, 1]."""

    image_size: int | None = None

    def __call__(self, el):
        for key in IMAGE_KEYS:
            img = el[key] if self.image_size is None else _resize(el[key], self.image_size)
            el[key] = to_float(img)
        return el


@dataclasses.dataclass(frozen=True)
class PairedAugment:
    """Grain random_map: one draw of crop/flip/rot90 applied to both images, then Finalise.
    The generator Grain passes is seeded by (seed, element index): deterministic per element."""

    augment: Augment
    image_size: int | None = None

    def __call__(self, el, rng: np.random.Generator):
        a = self.augment
        h, w = el["sat_image"].shape[:2]
        size = self.image_size or h
        lo, hi = a.crop_scale
        side = int(round(min(h, w) * rng.uniform(lo, hi)))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        hflip = a.hflip and rng.random() < 0.5
        vflip = a.vflip and rng.random() < 0.5
        k = int(rng.integers(4)) if a.rot90 else 0
        box = (x0, y0, x0 + side, y0 + side)
        for key in IMAGE_KEYS:
            img = el[key]
            if side != size or (side, side) != (h, w):
                img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC, box=box))
            if hflip:
                img = img[:, ::-1]
            if vflip:
                img = img[::-1]
            if k:
                img = np.rot90(img, k)
            el[key] = to_float(img)  # astype copies the flipped/rotated view contiguously
        return el
