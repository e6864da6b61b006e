"""Image I/O: the one place where files become pixel arrays and arrays become files.

    decode_image(data_or_file, name) -> (H, W, 3) uint8 RGB
        Every mode Pillow opens is converted or refused with one line naming the file:
          1, L, P, RGB, RGBA, LA, PA, CMYK, YCbCr   Pillow's own conversion to RGB (alpha dropped,
                                                    palette looked up, CMYK/YCbCr converted)
          I;16, I;16L, I;16B, I;16N                 16-bit grey: scaled by 255/65535, rounded
                                                    (not clipped), repeated over R, G, B
          I (from a 16-bit PNG)                     the same 16-bit scaling
          I (other files), F                        refused: 32-bit integer / float pixels have
                                                    no range to map; convert them first
    read_image(path, size=None, square=False) -> (H, W, 3) uint8
        decode_image of a file; optionally refuse non-square tiles and resize (bicubic) to size.
    to_float(uint8) -> float32 in [-1, 1]         x / 127.5 - 1 (the model's pixel range)
    to_uint8(float in [-1, 1]) -> uint8           round((x + 1) * 127.5), clipped to [0, 255]
    write_image(path, image)                      atomic PNG/JPEG/... by suffix; .npy keeps floats
    looks_like(image) -> "map" | "sat"           a cheap guess of the modality (see its doc)
    grid(rows, gap=2, min_tile=64) -> uint8 canvas; write_grid(path, rows): a picture of rows of
        images in [-1, 1] (tiles smaller than min_tile enlarged, nearest, so tiny runs show)
"""

from __future__ import annotations

import io
import pathlib

import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.io import files

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
PILLOW_RGB = ("1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "RGBX", "RGBa", "La")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def to_float(pixels) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] (the same expression the input pipeline uses)."""
    return np.asarray(pixels).astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)


def to_uint8(image) -> np.ndarray:
    """float pixels in [-1, 1] -> uint8, rounded to nearest, clipped."""
    return np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _pillow_to_rgb(im, name: str) -> np.ndarray:
    mode = im.mode
    if mode in SIXTEEN_BIT or (mode == "I" and im.format == "PNG"):
        a = np.asarray(im).astype(np.float64)
        if mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"{name}: 32-bit integer image (mode I) with values outside 16 bits; "
                             "convert it to 8-bit RGB first")
        grey = np.round(a * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in PILLOW_RGB:
        return np.asarray(im.convert("RGB"), np.uint8)
    what = {"I": "32-bit integer", "F": "32-bit float"}.get(mode, "unsupported")
    raise InputError(f"{name}: {what} image (mode {mode}) has no fixed pixel range; convert it "
                     "to 8-bit or 16-bit RGB/grey first")


def decode_image(data, name: str = "image") -> np.ndarray:
    """bytes or a binary file -> (H, W, 3) uint8 RGB (see module doc for the modes)."""
    from PIL import Image, UnidentifiedImageError

    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with Image.open(src) as im:
            im.load()
            return _pillow_to_rgb(im, name)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.BICUBIC), np.uint8)


def read_image(path, size: int | None = None, square: bool = False) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB; InputError naming the file when it cannot be."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as f:
        pixels = decode_image(f, str(path))
    h, w = pixels.shape[:2]
    if square and h != w:
        raise InputError(f"{path}: image is {w}x{h}; expected a square tile")
    if size is not None and (h != size or w != size):
        pixels = _resize(pixels, size)
    return pixels


def write_image(path, image) -> pathlib.Path:
    """Writes (H, W, 3) uint8, or floats in [-1, 1], atomically; the format follows the suffix
    (.npy stores the float array as is)."""
    from PIL import Image

    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    arr = np.asarray(image)
    with files.atomic_path(path) as tmp:
        if suffix == ".npy":
            np.save(tmp, arr.astype(np.float32))
            return path
        pixels = arr if arr.dtype == np.uint8 else to_uint8(arr)
        fmt = Image.registered_extensions().get(suffix)
        if fmt is None:
            raise InputError(f"{path}: unknown image format {suffix!r}; use .png or .jpg")
        Image.fromarray(pixels).save(tmp, format=fmt)
    return path


# A rendered map is drawn with a few flat colours; a photograph spreads over many. Measured on
# the synthetic city (PNG): maps put 0.98-1.0 of their pixels in their 8 commonest colours,
# satellite tiles 0.24-0.66; JPEG compression lowers a small map's share (to 0.3 at 32 px),
# so a JPEG map may pass as "sat": the guess errs towards saying nothing.
MAP_COLOUR_SHARE = 0.75


def looks_like(image) -> str:
    """"map" when at least MAP_COLOUR_SHARE of the pixels of a uint8 (H, W, 3) image fall in
    its 8 commonest colours (16 levels per channel), else "sat". For warnings only (an input
    of the other modality, swapped patterns); evaluation/condition.py is not this."""
    q = np.asarray(image, np.uint8)[..., :3] >> 4
    codes = (q[..., 0].astype(np.int32) << 8) | (q[..., 1].astype(np.int32) << 4) | q[..., 2]
    counts = np.bincount(codes.ravel(), minlength=4096)
    share = np.sort(counts)[-8:].sum() / max(codes.size, 1)
    return "map" if share >= MAP_COLOUR_SHARE else "sat"


def grid(rows, gap: int = 2, min_tile: int = 64) -> np.ndarray:
    """rows: lists of (H, W, 3) images in [-1, 1] (or uint8) -> one uint8 canvas, white gaps."""
    rows = [[np.asarray(im) for im in r] for r in rows]
    h, w = rows[0][0].shape[:2]
    zoom = max(1, min_tile // max(h, 1))
    ncol = max(len(r) for r in rows)
    H, W = h * zoom, w * zoom
    canvas = np.full((len(rows) * (H + gap) - gap, ncol * (W + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            px = im if im.dtype == np.uint8 else to_uint8(im)
            if zoom > 1:
                px = np.repeat(np.repeat(px, zoom, 0), zoom, 1)
            canvas[i * (H + gap):i * (H + gap) + H, j * (W + gap):j * (W + gap) + W] = px
    return canvas


def write_grid(path, rows, gap: int = 2, min_tile: int = 64) -> None:
    """grid(...) written as a PNG (atomically; one upload for object-store paths)."""
    canvas = grid(rows, gap, min_tile)
    if files.is_remote(path):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(canvas).save(buf, format="PNG")
        files.write_bytes(path, buf.getvalue())
        return
    write_image(path, canvas)

