"""The package's one-home primitives: atomic writes, image decoding, progress lines, scale geometry."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from earthmapper_jax import scales
from earthmapper_jax.errors import InputError
from earthmapper_jax.io import files, images
from earthmapper_jax.progress import progress


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with files.atomic_open(target, "w") as f:
            f.write("{half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    files.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    d = tmp_path / "model"
    with files.atomic_dir(d) as stage:
        (stage / "a").write_text("1")
    assert (d / "a").read_text() == "1"
    with pytest.raises(FileExistsError):
        with files.atomic_dir(d):
            pass
    with pytest.raises(RuntimeError):
        with files.atomic_dir(d, overwrite=True) as stage:
            (stage / "b").write_text("2")
            raise RuntimeError
    assert sorted(p.name for p in d.iterdir()) == ["a"]  # the old one is untouched
    with files.atomic_dir(d, overwrite=True) as stage:
        (stage / "b").write_text("2")
    assert sorted(p.name for p in d.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# ----------------------------------------------------------------------------- images


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG" if im.mode != "CMYK" else "TIFF")
    return buf.getvalue()


def test_sixteen_bit_grey_is_scaled_not_clipped():
    a = np.array([[0, 257, 32768, 65535]], np.uint16)
    px = images.decode_image(_png(Image.fromarray(a)), "g16.png")
    assert px.shape == (1, 4, 3) and px.dtype == np.uint8
    np.testing.assert_array_equal(px[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(px[..., 0], px[..., 2])


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"])
def test_every_eight_bit_mode_reads_as_pillow_rgb(mode):
    rgb = Image.fromarray(np.array([[[200, 10, 30], [0, 255, 90]]], np.uint8))
    im = rgb.convert(mode)
    want = np.asarray(im.convert("RGB"))
    if mode in ("YCbCr", "PA"):  # PNG cannot hold these: decode the in-memory image
        got = images._pillow_to_rgb(im, "x")
    else:
        got = images.decode_image(_png(im), "x")
    np.testing.assert_array_equal(got, want)
    if mode in ("RGB", "RGBA"):
        assert tuple(got[0, 0]) == (200, 10, 30)


def test_float_and_int32_images_are_refused_by_name():
    with pytest.raises(InputError, match=r"f\.tif: 32-bit float image \(mode F\)"):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((2, 2), np.float32), mode="F").save(buf, format="TIFF")
        images.decode_image(buf.getvalue(), "f.tif")
    with pytest.raises(InputError, match="junk.png: not a readable image"):
        images.decode_image(b"not an image", "junk.png")


def test_float_uint8_round_trip_and_write(tmp_path):
    u = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    np.testing.assert_array_equal(images.to_uint8(images.to_float(u)), u)
    p = images.write_image(tmp_path / "x.png", images.to_float(u))
    np.testing.assert_array_equal(images.read_image(p), u)
    with pytest.raises(InputError, match="square"):
        images.read_image(images.write_image(tmp_path / "r.png", u[:8]), square=True)
    assert images.read_image(p, size=8).shape == (8, 8, 3)


def test_grid_layout():
    a, b = -np.ones((4, 4, 3), np.float32), np.ones((4, 4, 3), np.float32)
    g = images.grid([[a, b]], gap=2, min_tile=8)
    assert g.shape == (8, 18, 3)
    assert g[0, 0, 0] == 0 and g[0, 17, 0] == 255 and g[0, 8, 0] == 255


# ----------------------------------------------------------------------------- progress


def test_progress_off_a_terminal_prints_lines_not_frames():
    out = io.StringIO()
    bar = progress(1000, desc="train", unit="step", stream=out, every_s=3600)
    for _ in range(1000):
        bar.update()
    bar.set_postfix({"loss": 0.5})
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 1 and lines[0].startswith("train: 1000/1000 step (100%)"), lines
    assert "loss 0.5" in lines[0]
    quiet = io.StringIO()
    silent = progress(10, stream=quiet, enabled=False)
    silent.update(10)
    silent.close()
    assert quiet.getvalue() == ""


# ----------------------------------------------------------------------------- scales


def test_scale_geometry():
    pn = (1, 2, 3)
    assert scales.seq_len(pn) == 14
    assert scales.scale_offsets(pn) == [(0, 1), (1, 5), (5, 14)]
    np.testing.assert_array_equal(scales.scale_ids(pn), [0] + [1] * 4 + [2] * 9)
    maps = [np.arange(2 * p * p).reshape(2, p, p) + 100 * i for i, p in enumerate(pn)]
    flat = scales.flatten_tokens(maps)
    assert flat.shape == (2, 14) and int(flat[1, 0]) == 1 and int(flat[0, 1]) == 100
    for a, b in zip(scales.split_tokens(flat, pn), maps):
        np.testing.assert_array_equal(np.asarray(a), b)
