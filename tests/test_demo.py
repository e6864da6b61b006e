"""`make demo` at smoke size (examples/demo.py --smoke: 64 pairs, 3 steps per training, a few
minutes of CPU, mostly compiling): every output the README and the demo's own last lines claim
exists, is readable, and is named in what the demo prints, the condition-use figures too."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from PIL import Image

from earthmapper_jax.io.checkpoint import read_config
from earthmapper_jax.train.metrics import read_jsonl

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 32 and im.height > 32, path


@pytest.mark.slow
def test_demo_smoke_writes_every_claimed_output(tmp_path):
    out = tmp_path / "demo_out"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as `make demo` runs (conftest simulates 8)
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--out", str(out),
                          "--smoke"], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    printed = res.stdout

    # the synthetic dataset: TFRecord shards and manifests of both splits
    for split in ("train", "val"):
        assert (out / "data" / f"{split}.manifest.json").is_file()
        assert list((out / "data").glob(f"{split}-*.tfrecord"))
    # the tokenizer run: reconstruction grid with its PSNR, the exported tokenizer
    _png(out / "reconstructions.png")
    assert "PSNR satellite" in printed
    assert read_config(out / "tokenizer_run" / "tokenizer", expect_kind="tokenizer")
    # the EarthMapper run: exported model, sample grids
    assert read_config(out / "earthmapper_run" / "model", expect_kind="earthmapper")
    samples = sorted((out / "earthmapper_run" / "samples").glob("*.png"))
    assert samples
    for s in samples:
        _png(s)
    # metrics.jsonl files and loss-curve plots of both runs
    for run in ("tokenizer_run", "earthmapper_run"):
        assert any("loss" in r for r in read_jsonl(out / run / "metrics.jsonl")), run
        _png(out / run / "plots" / "curves.png")
        assert str(out / run / "plots" / "curves.png") in printed
        assert str(out / run / "metrics.jsonl") in printed
    # the condition-use figures of the held-out tiles (evaluation/condition.py), printed and saved
    for words in ("conditioning gain", "layout gap SSIM", "right modality", "pix2pix"):
        assert words in printed, words
    cond = json.loads((out / "condition.json").read_text())
    assert {"teacher_forced", "sat2map", "map2sat", "target"} <= set(cond)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"tokenizer", "earthmapper", "condition"}
    for claimed in (out / "reconstructions.png", out / "tokenizer_run" / "tokenizer",
                    out / "earthmapper_run" / "model", out / "earthmapper_run" / "samples"):
        assert str(claimed) in printed, claimed
    assert not list(out.glob(".*tmp-*")), "temporary files left behind"
