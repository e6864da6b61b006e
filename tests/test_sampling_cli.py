"""The sampling subcommands end to end on the tiny trained model (`tiny_em_model`): translate
(files and a prepared split), generate, inpaint, outpaint; the shared output machinery (atomic
outputs, reruns skip, done / skipped / failed, a bad input never stops the good ones, no output
folder before the first result); and one line for each kind of bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from earthmapper_jax.cli import main as cli_main

FAST = ["--batch-size", "2", "--top-k", "4"]


def _tile(path, size, seed=0, mode="RGB"):
    px = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(px).convert(mode).save(path)
    return path


def _err_lines(capsys):
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return cap.out, [line for line in cap.err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def em(tiny_em_model):
    return tiny_em_model


def test_translate_a_prepared_split_then_rerun_skips(em, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["translate", "--checkpoint", str(em["model"]), "--direction", "sat2map",
            "--data", str(em["data"]), "--split", "val", "--out", str(out), *FAST]
    assert cli_main(args) == 0
    printed, _ = _err_lines(capsys)
    assert "translate: done 8 / skipped 0 / failed 0" in printed
    pngs = sorted(out.glob("*_map.png"))
    assert len(pngs) == 8 and Image.open(pngs[0]).size == (em["image_size"],) * 2
    record = json.loads((out / "translate_options.json").read_text())
    assert record["direction"] == "sat2map" and record["top_k"] == 4 and record["guidance"] is None
    first = record["outputs"][pngs[0].stem]
    assert first["coords_source"] == "record" and len(first["coords"]) == 2
    # a rerun skips the finished outputs; --overwrite would redo them
    assert cli_main(args) == 0
    assert "done 0 / skipped 8 / failed 0" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left"


def test_generate_from_negative_coordinates(em, tmp_path, capsys):
    out = tmp_path / "gen"
    rc = cli_main(["generate", "--checkpoint", str(em["model"]), "--coords", "-33.9,151.2",
                   "--coords", "40.7,-74.0", "--out", str(out), *FAST])
    assert rc == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["-33.90000_151.20000_000_map.png", "-33.90000_151.20000_000_sat.png",
                     "40.70000_-74.00000_000_map.png", "40.70000_-74.00000_000_sat.png"]
    record = json.loads((out / "generate_options.json").read_text())
    assert record["outputs"]["-33.90000_151.20000_000_sat"]["coords"] == [-33.9, 151.2]


def test_inpaint_box_keeps_going_past_a_bad_file(em, tmp_path, capsys):
    size = em["image_size"]
    src = tmp_path / "in"
    src.mkdir()
    _tile(src / "a_40.5_-73.9.png", size, 1)
    _tile(src / "b.png", 2 * size, 2)              # resized to the model's size
    Image.fromarray(np.zeros((size, 2 * size, 3), np.uint8)).save(src / "c_wide.png")
    out = tmp_path / "out"
    rc = cli_main(["inpaint", str(src), "--modality", "sat", "--box", "2,2,10,10",
                   "--checkpoint", str(em["model"]), "--out", str(out), *FAST])
    printed, err = _err_lines(capsys)
    assert rc == 1 and "done 2 / skipped 0 / failed 1" in printed
    assert err[-1].startswith("  failed:") and err[-1].endswith("expected a square tile")
    assert sorted(p.name for p in out.glob("*.png")) == ["a_40.5_-73.9_sat_inpaint.png", "b_sat_inpaint.png"]
    record = json.loads((out / "inpaint_options.json").read_text())["outputs"]
    assert record["a_40.5_-73.9_sat_inpaint"]["coords_source"] == "filename"
    assert record["a_40.5_-73.9_sat_inpaint"]["coords"] == [40.5, -73.9]
    assert record["b_sat_inpaint"]["coords_source"] == "none"


def test_outpaint_with_a_condition_and_a_sidecar(em, tmp_path, capsys):
    size = em["image_size"]
    image, cond = _tile(tmp_path / "m.png", size, 3), _tile(tmp_path / "s.png", size, 4)
    sidecar = tmp_path / "coords.csv"
    sidecar.write_text("name,lat,lon\nm,-22.9,-43.2\n")
    out = tmp_path / "out"
    rc = cli_main(["outpaint", str(image), "--modality", "map", "--keep", "4,4,12,12",
                   "--condition", str(cond), "--coords-file", str(sidecar),
                   "--checkpoint", str(em["model"]), "--out", str(out), *FAST])
    assert rc == 0
    assert [p.name for p in out.glob("*.png")] == ["m_map_outpaint.png"]
    rec = json.loads((out / "outpaint_options.json").read_text())
    assert rec["outputs"]["m_map_outpaint"]["coords"] == [-22.9, -43.2] and rec["keep"] == "4,4,12,12"


# ----------------------------------------------------------------------------- bad input, one line


@pytest.mark.parametrize("coords, message", [
    ("86.0,10", "latitude 86.0 outside Web Mercator's range"),
    ("-85.1,10", "latitude -85.1 outside Web Mercator's range"),
    ("10,-181", "longitude -181.0 outside [-180, 180]"),
    ("40.7", "expected LAT,LON in degrees"),
    ("40.7,east", "expected LAT,LON in degrees"),
])
def test_bad_coordinates(em, tmp_path, capsys, coords, message):
    rc = cli_main(["generate", "--checkpoint", str(em["model"]), "--coords", coords,
                   "--out", str(tmp_path / "out")])
    _, err = _err_lines(capsys)
    assert rc == 1 and len(err) == 1 and message in err[0] and "--coords" in err[0], err
    assert not (tmp_path / "out").exists()


def test_negative_coordinates_as_written_in_a_real_process(em, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-m", "earthmapper_jax.cli", "generate", "--checkpoint",
                          str(em["model"]), "--coords", "-86.5,151.2", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert "--coords -86.5,151.2: latitude -86.5 outside Web Mercator's range" in lines[0]
    assert not (tmp_path / "o").exists()


def _inpaint(em, tmp_path, *extra, image=None):
    image = image or _tile(tmp_path / "t.png", em["image_size"])
    return cli_main(["inpaint", str(image), "--modality", "map", "--checkpoint", str(em["model"]),
                     "--out", str(tmp_path / "out"), *FAST, *extra])


def test_bad_masks_boxes_images_and_checkpoints(em, tmp_path, capsys):
    size = em["image_size"]
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((size // 2, size // 2), 255, np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((size, size), np.float32), mode="F").save(tmp_path / "float.tif")
    cases = [
        (("--mask", str(tmp_path / "grey.png")), {}, "not a binary mask"),
        (("--mask", str(tmp_path / "small.png")), {}, "does not match"),
        (("--box", f"0,0,{size + 4},{size}"), {}, f"lies outside the {size}x{size} image"),
        (("--box", "4,4,2,8"), {}, "expected x0 < x1 and y0 < y1"),
        (("--box", "0,0,8,8"), {"image": tmp_path / "float.tif"}, "has no fixed pixel range"),
        (("--box", "0,0,8,8", "--modality", "road"), {}, "--modality 'road'"),
    ]
    for extra, kw, message in cases:
        rc = _inpaint(em, tmp_path, *extra, **kw)
        _, err = _err_lines(capsys)
        assert rc == 1 and message in err[-1], (extra, err)
        assert len([e for e in err if "error" in e or "failed" in e]) == 1, err
        assert not (tmp_path / "out").exists(), extra
    # a checkpoint of another kind: the tokenizer directory
    rc = cli_main(["translate", str(tmp_path / "t.png"), "--direction", "sat2map", "--checkpoint",
                   str(em["tokenizer"]), "--out", str(tmp_path / "out")])
    _, err = _err_lines(capsys)
    assert rc == 1 and len(err) == 1 and "holds a 'tokenizer' checkpoint" in err[0], err
    assert not (tmp_path / "out").exists()
