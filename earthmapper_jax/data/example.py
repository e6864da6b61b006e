"""The record schema: one satellite/map pair as a `tf.train.Example`, built and parsed with the
Example protos that ship inside tensorflow-datasets (no TensorFlow).

Features (schema version 1):

    satellite/encoded, map/encoded   bytes   PNG or JPEG, as in the source when not resized
    satellite/format, map/format     bytes   "png" | "jpeg"
    height, width                    int64   stored image size (both images)
    original_height, original_width  int64   size of the source satellite image
    latitude, longitude              float   tile centre, WGS84 degrees; NaN when unknown
    tile_id, city, source            bytes   identifiers (utf-8)
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2

from earthmapper_jax.errors import DataError, InputError
from earthmapper_jax.io import images

SCHEMA_VERSION = 1
IMAGE_FORMATS = ("png", "jpeg")


@dataclasses.dataclass(frozen=True)
class PairRecord:
    """One pair as stored: encoded images plus metadata."""

    satellite: bytes
    map: bytes
    tile_id: str
    latitude: float = math.nan
    longitude: float = math.nan
    city: str = ""
    source: str = ""
    height: int = 0
    width: int = 0
    original_height: int = 0
    original_width: int = 0
    satellite_format: str = "png"
    map_format: str = "png"


def sniff_format(data: bytes) -> str | None:
    """'png' / 'jpeg' from the magic bytes, None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def encode(rec: PairRecord) -> bytes:
    """Serialised tf.train.Example of a pair."""
    ex = tf_example_pb2.Example()
    f = ex.features.feature
    f["satellite/encoded"].bytes_list.value.append(rec.satellite)
    f["map/encoded"].bytes_list.value.append(rec.map)
    f["satellite/format"].bytes_list.value.append(rec.satellite_format.encode())
    f["map/format"].bytes_list.value.append(rec.map_format.encode())
    for key in ("height", "width", "original_height", "original_width"):
        f[key].int64_list.value.append(int(getattr(rec, key)))
    f["latitude"].float_list.value.append(float(rec.latitude))
    f["longitude"].float_list.value.append(float(rec.longitude))
    for key in ("tile_id", "city", "source"):
        f[key].bytes_list.value.append(getattr(rec, key).encode("utf-8"))
    return ex.SerializeToString(deterministic=True)


def _one(feature, key, kind):
    values = getattr(feature[key], kind).value
    if len(values) != 1:
        raise KeyError(key)
    return values[0]


def parse(data: bytes, where: str = "record") -> PairRecord:
    """PairRecord from a serialised Example; DataError (naming `where`) when it is not one."""
    try:
        ex = tf_example_pb2.Example.FromString(data)
        f = ex.features.feature
        return PairRecord(
            satellite=_one(f, "satellite/encoded", "bytes_list"),
            map=_one(f, "map/encoded", "bytes_list"),
            satellite_format=_one(f, "satellite/format", "bytes_list").decode(),
            map_format=_one(f, "map/format", "bytes_list").decode(),
            tile_id=_one(f, "tile_id", "bytes_list").decode("utf-8"),
            city=_one(f, "city", "bytes_list").decode("utf-8") if "city" in f else "",
            source=_one(f, "source", "bytes_list").decode("utf-8") if "source" in f else "",
            latitude=float(_one(f, "latitude", "float_list")) if "latitude" in f else math.nan,
            longitude=float(_one(f, "longitude", "float_list")) if "longitude" in f else math.nan,
            height=int(_one(f, "height", "int64_list")) if "height" in f else 0,
            width=int(_one(f, "width", "int64_list")) if "width" in f else 0,
            original_height=int(_one(f, "original_height", "int64_list")) if "original_height" in f else 0,
            original_width=int(_one(f, "original_width", "int64_list")) if "original_width" in f else 0,
        )
    except KeyError as e:
        raise DataError(f"{where}: not an EarthMapper pair example (feature {e} missing or not single)") from None
    except Exception as e:  # protobuf DecodeError, bad utf-8
        raise DataError(f"{where}: not a parsable tf.train.Example ({type(e).__name__}: {e})") from None


def decode_image(data: bytes, where: str = "image") -> np.ndarray:
    """A stored image -> uint8 (H, W, 3) by `io.images.decode_image`; a record that holds no
    readable image is corrupt data, so DataError naming `where`."""
    try:
        return images.decode_image(data, where)
    except InputError as e:
        raise DataError(str(e)) from None


def encode_image(image: np.ndarray, fmt: str = "png", jpeg_quality: int = 95) -> bytes:
    """uint8 (H, W, 3) -> PNG or JPEG bytes."""
    buf = io.BytesIO()
    img = Image.fromarray(np.asarray(image, np.uint8))
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=6)
    elif fmt == "jpeg":
        img.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)
    else:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {fmt!r}")
    return buf.getvalue()
