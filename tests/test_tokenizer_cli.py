"""`earthmapper convert var-vae` and `earthmapper reconstruct`, and their one-line errors on bad
input (nothing written half-way)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from earthmapper_jax.cli import main
from earthmapper_jax.errors import CheckpointError, InputError
from earthmapper_jax.io.pth import load_state_dict, save_state_dict
from earthmapper_jax.tokenizer import Tokenizer, load

PN = "1,2,3,4,6,8"


@pytest.fixture(scope="module")
def vae_pth(fixtures_dir):
    return fixtures_dir / "var_vae" / "vae.pth"


@pytest.fixture(scope="module")
def tok_dir(vae_pth, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "tok"
    assert main(["convert", "var-vae", str(vae_pth), str(d), "--image-size", "128",
                 "--patch-nums", PN]) == 0
    return d


@pytest.fixture(scope="module")
def image_png(fixtures_dir, tmp_path_factory):
    g = np.load(fixtures_dir / "var_vae" / "golden.npz")
    p = tmp_path_factory.mktemp("img") / "in.png"
    Image.fromarray(np.round((g["images"][0] + 1) * 127.5).astype(np.uint8)).save(p)
    return p


def _error_line(capsys, argv, expected_rc=1):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == expected_rc, err
    assert len(err.splitlines()) == 1, err
    return err


def test_reconstruct_writes_image_and_prints_psnr_ssim(tok_dir, image_png, tmp_path, capsys):
    out = tmp_path / "rec.png"
    assert main(["reconstruct", "--tokenizer", str(tok_dir), str(image_png), str(out)]) == 0
    line = capsys.readouterr().out
    assert "PSNR" in line and "SSIM" in line and "scales 1-6 of 6" in line
    rec = np.asarray(Image.open(out))
    assert rec.shape == (128, 128, 3) and rec.dtype == np.uint8
    assert main(["reconstruct", "--tokenizer", str(tok_dir), str(image_png), str(tmp_path / "r2.npy"),
                 "--scales", "2"]) == 0
    assert "scales 1-2 of 6" in capsys.readouterr().out
    coarse = np.load(tmp_path / "r2.npy")
    assert coarse.shape == (128, 128, 3) and np.abs(coarse).max() <= 1
    # Same as the library call.
    x = np.asarray(Image.open(image_png), np.float32)[None] / 127.5 - 1
    ref = np.asarray(load(tok_dir).reconstruct(x, num_scales=2))[0]
    np.testing.assert_allclose(coarse, ref, atol=1e-6)


def test_wrong_image_size(tok_dir, tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(small)
    out = tmp_path / "o.png"
    err = _error_line(capsys, ["reconstruct", "--tokenizer", tok_dir, small, out])
    assert "64x64" in err and "128x128" in err and "--resize" in err
    assert not out.exists()
    assert main(["reconstruct", "--tokenizer", str(tok_dir), str(small), str(out), "--resize"]) == 0
    assert Image.open(out).size == (128, 128)


def test_wrong_channels(tok_dir, tmp_path, capsys):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(gray)
    err = _error_line(capsys, ["reconstruct", "--tokenizer", tok_dir, gray, tmp_path / "o.png"])
    assert "1 channel (L), expected 3 (RGB)" in err
    rgba = tmp_path / "rgba.npy"
    np.save(rgba, np.zeros((128, 128, 4), np.float32))
    err = _error_line(capsys, ["reconstruct", "--tokenizer", tok_dir, rgba, tmp_path / "o.png"])
    assert "(128, 128, 4)" in err and "(H, W, 3)" in err
    assert not (tmp_path / "o.png").exists()


def test_values_outside_range(tok_dir, tmp_path, capsys):
    arr = np.zeros((128, 128, 3), np.float32)
    arr[0, 0, 0] = 1.5
    np.save(tmp_path / "hot.npy", arr)
    err = _error_line(capsys, ["reconstruct", "--tokenizer", tok_dir, tmp_path / "hot.npy",
                               tmp_path / "o.npy"])
    assert "expected [-1, 1]" in err and "1.5" in err
    assert not (tmp_path / "o.npy").exists()
    arr[0, 0, 0] = 1.0005  # within the 1e-3 tolerance
    np.save(tmp_path / "ok.npy", arr)
    assert main(["reconstruct", "--tokenizer", str(tok_dir), str(tmp_path / "ok.npy"),
                 str(tmp_path / "o.npy")]) == 0


def test_scales_out_of_range(tok_dir, image_png, tmp_path, capsys):
    err = _error_line(capsys, ["reconstruct", "--tokenizer", tok_dir, image_png, tmp_path / "o.png",
                               "--scales", "7"])
    assert "--scales must be in 1..6" in err


def test_convert_shape_mismatch_names_the_key(vae_pth, tmp_path, capsys):
    sd = load_state_dict(vae_pth)
    key = "decoder.up.2.block.1.conv1.weight"
    sd[key] = np.zeros((64, 64, 1, 1), np.float32)  # a 1x1 conv where VAR has a 3x3
    save_state_dict(tmp_path / "bad.pth", sd)
    dst = tmp_path / "out"
    err = _error_line(capsys, ["convert", "var-vae", tmp_path / "bad.pth", dst, "--image-size", "128",
                               "--patch-nums", PN])
    assert key in err and "(64, 64, 1, 1)" in err
    assert not dst.exists() and not list(tmp_path.glob(".out*"))


def test_convert_other_architecture(tmp_path, capsys):
    save_state_dict(tmp_path / "var.pth", {"blocks.0.attn.mat_qkv.weight": np.zeros((6, 2), np.float32)})
    err = _error_line(capsys, ["convert", "var-vae", tmp_path / "var.pth", tmp_path / "o"])
    assert "not a VAR VQ-VAE state dict" in err and "encoder.conv_in.weight" in err


def test_convert_extra_key(vae_pth, tmp_path, capsys):
    sd = load_state_dict(vae_pth)
    sd["encoder.extra.weight"] = np.zeros(3, np.float32)
    save_state_dict(tmp_path / "extra.pth", sd)
    err = _error_line(capsys, ["convert", "var-vae", tmp_path / "extra.pth", tmp_path / "o",
                               "--image-size", "128", "--patch-nums", PN])
    assert "unexpected key encoder.extra.weight" in err


def test_convert_truncated_pth(vae_pth, tmp_path, capsys):
    data = vae_pth.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    dst = tmp_path / "out"
    err = _error_line(capsys, ["convert", "var-vae", tmp_path / "cut.pth", dst, "--image-size", "128",
                               "--patch-nums", PN])
    assert "cut.pth" in err
    assert not dst.exists()


def test_convert_patch_nums_must_end_at_latent_size(vae_pth, tmp_path, capsys):
    dst = tmp_path / "out"
    err = _error_line(capsys, ["convert", "var-vae", vae_pth, dst, "--image-size", "128",
                               "--patch-nums", "1,2,3,4"])
    assert "last patch_num 4 must equal the latent size 8" in err
    err = _error_line(capsys, ["convert", "var-vae", vae_pth, dst, "--image-size", "96"])
    assert "no default patch_nums for image size 96" in err
    assert not dst.exists()


def test_tokenizer_dir_of_another_architecture(tok_dir, image_png, tmp_path, capsys):
    bad = tmp_path / "bad_tok"
    shutil.copytree(tok_dir, bad)
    doc = json.loads((bad / "config.json").read_text())
    doc["config"]["z_channels"] = 16
    (bad / "config.json").write_text(json.dumps(doc))
    err = _error_line(capsys, ["reconstruct", "--tokenizer", bad, image_png, tmp_path / "o.png"])
    assert "parameter" in err and "expected" in err and "16" in err
    with pytest.raises(CheckpointError):
        Tokenizer.from_params(load(tok_dir).params, dict(doc["config"]))


def test_api_input_checks(tok_dir):
    tok = load(tok_dir)
    with pytest.raises(InputError, match="does not match the tokenizer's 128x128"):
        tok.encode(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(InputError, match="NHWC RGB"):
        tok.encode(np.zeros((1, 128, 128, 1), np.float32))
    with pytest.raises(InputError, match=r"expected \[-1, 1\]"):
        tok.encode(np.full((1, 128, 128, 3), -1.01, np.float32))
    with pytest.raises(InputError, match="token map 1 has shape"):
        tok.decode([np.zeros((1, 1, 1), np.int32), np.zeros((1, 3, 3), np.int32)])
    with pytest.raises(InputError, match=r"ids in \[512, 512\], expected \[0, 511\]"):
        tok.decode([np.full((1, 1, 1), 512, np.int32)])
    with pytest.raises(InputError, match="got 2 token maps, expected 6"):
        tok.teacher_forcing_inputs([np.zeros((1, 1, 1), np.int32), np.zeros((1, 2, 2), np.int32)])
