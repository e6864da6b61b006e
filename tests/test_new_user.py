"""A new user's first hour (issue 16, parts 1 and 2): each case through the real command line
in a subprocess — the exit code, exactly one stderr line and no traceback, nothing left behind,
the pixel values where converting is the answer, and "before any state is built" as a time
limit: 2 s after the config is read (the start-up itself, Python + absl + the config file's
imports, is measured in the same module and scaled by 1.5 for a loaded machine).

Translation's own cases (#5 coordinates, #10 half-way runs) are tested with cli/translate.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from earthmapper_jax.cli.train import load_config
from earthmapper_jax.data import example, tfrecord
from earthmapper_jax.data.writer import split_shards
from earthmapper_jax.data_prep import splits as splits_lib
from earthmapper_jax.data_prep.common import PairTask
from earthmapper_jax.data.synthetic_city import make_pair
from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.io.checkpoint import save_params
from earthmapper_jax.io.images import looks_like
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.loading import load
from earthmapper_jax.tokenizer import Tokenizer
from earthmapper_jax.train import earthmapper_task, preflight
from earthmapper_jax.train.stop_signals import StopSignals
from earthmapper_jax.train.trainer import train_and_evaluate
from tests import toy_config, toy_task, troubleshooting_doc

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = f"{ROOT / 'configs' / 'earthmapper_tiny.py'}:tiny"
# The tokenizer `make demo` trains: tiny at 32 px, one level fewer (scales 1..8 all the same).
DEMO_TOKENIZER = dict(ch=32, ch_mult=(1, 1, 2), z_channels=8, vocab_size=512, image_size=32,
                      patch_nums=(1, 2, 3, 4, 6, 8), num_res_blocks=1, using_sa=False,
                      using_mid_sa=False)


def _run(args, cwd, timeout=600, env=None):
    """(returncode, stdout, stderr, seconds) of `python ARGS` with the repository importable."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    t = time.monotonic()
    r = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=e)
    return r.returncode, r.stdout, r.stderr, time.monotonic() - t


def _cli(*args, cwd, **kw):
    return _run(["-m", "earthmapper_jax.cli", *args], cwd, **kw)


def _one_line(rc, err, want_rc=1):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == want_rc, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def startup_s(tmp_path_factory):
    """Seconds to start Python and read the tiny config (what every train command pays)."""
    code = f"from earthmapper_jax.cli.train import load_config; load_config({TINY!r})"
    rc, _, err, s = _run(["-c", code], tmp_path_factory.mktemp("startup"))
    assert rc == 0, err
    return s


def _limit(startup_s):
    return 1.5 * startup_s + 2.0


@pytest.fixture(scope="module")
def tok32(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok") / "tokenizer"
    Tokenizer.init(DEMO_TOKENIZER, jax.random.key(0)).save(d)
    return d


@pytest.fixture(scope="module")
def image32(tmp_path_factory):
    p = tmp_path_factory.mktemp("img") / "in.png"
    Image.fromarray(make_pair(0, 32).satellite).save(p)
    return p


def _largest_param_file(d):
    return max((p for p in (d / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


# ----------------------------------------------------------------------------- part 1


def _save_16bit(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(values, np.uint16))
    assert img.mode.startswith("I;16")
    img.save(path)


def test_16bit_png_through_prepare_folders_and_inspect_keeps_its_values(tmp_path):
    grey16 = np.array([[0, 257, 1000, 32896], [40000, 50000, 65278, 65535]] * 2, np.uint16)
    expect = np.round(grey16.astype(np.float64) * 255 / 65535).astype(np.uint8)
    src = tmp_path / "tiles"
    for split in ("train", "val"):
        _save_16bit(src / split / "aerial_0.png", grey16)
        Image.fromarray(make_pair(1, 8).map[:4, :4]).save(src / split / "map_0.png")
    out = tmp_path / "tfr"
    rc, so, se, _ = _cli("prepare", "folders", src, "--sat-pattern", "*/aerial_*.png",
                         "--map-pattern", "*/map_*.png", "--out", out, "--size", "0",
                         "--workers", "1", "--quiet", cwd=tmp_path)
    assert rc == 0, se
    assert "splits train 1 (50.0 %), val 1 (50.0 %)" in so
    rc, so, se, _ = _cli("inspect", out, "--decode", "--quiet", cwd=tmp_path)
    assert rc == 0 and "ok (" in so, se
    for split in ("train", "val"):
        (_, data), = tfrecord.iter_records(split_shards(out, split)[0])
        sat = example.decode_image(example.parse(data).satellite)
        assert sat.shape == (4, 4, 3)
        for c in range(3):  # 16-bit grey scaled by its bit depth, not clipped to white
            np.testing.assert_array_equal(sat[..., c], expect)


def test_a_flipped_byte_in_a_model_directory_is_named(tok32, image32, tmp_path):
    d = tmp_path / "tok"
    shutil.copytree(tok32, d)
    victim = _largest_param_file(d)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    rc, _, err, _ = _cli("reconstruct", "--tokenizer", d, image32, tmp_path / "out.png",
                         cwd=tmp_path)
    line = _one_line(rc, err)
    assert str(victim) in line and "checksum differs" in line
    assert not (tmp_path / "out.png").exists()


# ----------------------------------------------------------------------------- part 2


def test_1_tokenizer_that_does_not_fit_the_model_is_refused_naming_both_values(
        tok32, tmp_path, startup_s):
    d = tmp_path / "tok256"
    shutil.copytree(tok32, d)
    doc = json.loads((d / "config.json").read_text())
    doc["config"]["vocab_size"] = 256
    (d / "config.json").write_text(json.dumps(doc))
    work = tmp_path / "run"
    rc, _, err, s = _cli("train", "--config", TINY, "--workdir", work,
                         f"--config.model.tokenizer_dir={d}",
                         f"--config.model.var_init={tmp_path / 'var_d2'}", cwd=tmp_path)
    line = _one_line(rc, err)
    assert "codebook size 256" in line and "need 512" in line and "var_init" in line
    assert not work.exists() and s < _limit(startup_s)
    # Trained from scratch, the model takes the tokenizer's codebook (and says so).
    config = load_config(TINY, [f"--config.model.tokenizer_dir={d}"])
    notes = preflight.check(config)
    assert config.model.vocab_size == 256 and notes == [
        f"config.model.vocab_size 512 -> 256 (the codebook size of the tokenizer {d})"]


def test_2_no_tokenizer_dir_fails_at_once_and_leaves_no_workdir(tmp_path, startup_s):
    work = tmp_path / "run"
    rc, _, err, s = _cli("train", "--config", TINY, "--workdir", work,
                         "--config.data.dir=/data/cnsatmap", cwd=tmp_path)
    line = _one_line(rc, err)
    assert "config.model.tokenizer_dir is not set" in line
    assert not work.exists() and s < _limit(startup_s)


def test_3_image_size_is_the_tokenizers_and_another_one_is_refused(tok32, tmp_path, startup_s):
    work = tmp_path / "run"
    rc, _, err, s = _cli("train", "--config", TINY, "--workdir", work,
                         f"--config.model.tokenizer_dir={tok32}", "--config.data.image_size=64",
                         cwd=tmp_path)
    line = _one_line(rc, err)
    assert "64 px" in line and "32 px" in line and "--config.data.image_size" in line
    assert not work.exists() and s < _limit(startup_s)
    # docs/training.md's command after `make demo`, as written, takes the tokenizer's 32 px.
    doc = (ROOT / "docs" / "training.md").read_text()
    cmd = ("earthmapper train --config configs/earthmapper_tiny.py:tiny --workdir runs/em "
           "--config.data.dir=demo_out/data "
           "--config.model.tokenizer_dir=demo_out/tokenizer_run/tokenizer")
    assert cmd in doc
    config = load_config(TINY, ["--config.data.dir=demo_out/data",
                                f"--config.model.tokenizer_dir={tok32}"])
    assert preflight.check(config) == [] and config.data.image_size == 32


@pytest.mark.parametrize("entry", ["earthmapper train", "python -m earthmapper_jax.main"])
def test_4_config_typo_names_the_closest_key(entry, tmp_path, startup_s):
    args = (["-m", "earthmapper_jax.cli", "train"] if entry.startswith("earthmapper")
            else ["-m", "earthmapper_jax.main"])
    work = tmp_path / "run"
    rc, _, err, s = _run([*args, "--config", TINY, "--workdir", work, "--config.modle.depth=4"],
                         tmp_path)
    line = _one_line(rc, err)
    assert "'modle.depth'" in line and "did you mean --config.model.depth?" in line
    assert not work.exists() and s < _limit(startup_s)


def test_6_truncated_params_print_only_the_line(tok32, image32, tmp_path):
    d = tmp_path / "old_tok"  # a directory written before checksums: Orbax meets the damage
    shutil.copytree(tok32, d)
    (d / "checksums.json").unlink()
    victim = _largest_param_file(d)
    os.truncate(victim, victim.stat().st_size // 3)
    rc, _, err, _ = _cli("reconstruct", "--tokenizer", d, image32, tmp_path / "out.png",
                         cwd=tmp_path)
    line = _one_line(rc, err)
    assert "cannot restore params" in line and "Event loop" not in err
    assert not (tmp_path / "out.png").exists()


def _pair_tree(root, layout):
    """Synthetic pairs as aerial_N.png / map_N.png under root/<folder> for each folder."""
    n = 0
    for folder, count in layout.items():
        for _ in range(count):
            p = make_pair(n, 32)
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(p.satellite).save(root / folder / f"aerial_{n}.png")
            Image.fromarray(p.map).save(root / folder / f"map_{n}.png")
            n += 1


def _prepare(root, out, *extra, cwd):
    return _cli("prepare", "folders", root, "--sat-pattern", "*aerial_*.png", "--map-pattern",
                "*map_*.png", "--out", out, "--size", "32", "--workers", "1", "--quiet", *extra,
                cwd=cwd)


def test_7_folder_splits_are_honoured_and_printed(tmp_path):
    src = tmp_path / "maps"
    _pair_tree(src, {"train": 4, "val": 2, "test": 2})
    rc, so, se, _ = _prepare(src, tmp_path / "all", cwd=tmp_path)
    assert rc == 0, se
    assert "splits train 4 (50.0 %), val 2 (25.0 %), test 2 (25.0 %)" in so
    assert "written 8 pairs (test 2, train 4, val 2)" in so
    # the val/ folder alone is split "val", not "train"
    rc, so, se, _ = _prepare(src / "val", tmp_path / "val_only", cwd=tmp_path)
    assert rc == 0 and "splits val 2 (100.0 %)" in so, se
    assert sorted(p.name for p in (tmp_path / "val_only").glob("*.manifest.json")) == \
        ["val.manifest.json"]
    # fractions on top of folder splits: refused before anything is written
    rc, _, err, _ = _prepare(src, tmp_path / "both", "--val-fraction", "0.1", cwd=tmp_path)
    assert "drop the fractions" in _one_line(rc, err) and not (tmp_path / "both").exists()


def test_7_fractions_empty_or_unreachable_splits_are_refused(tmp_path):
    src = tmp_path / "flat"
    _pair_tree(src, {"": 5})
    rc, _, err, _ = _prepare(src, tmp_path / "out", "--split", "random", "--val-fraction", "0.05",
                             cwd=tmp_path)
    assert "empty val split" in _one_line(rc, err) and not (tmp_path / "out").exists()


def test_7_city_fractions_land_within_one_city():
    sizes = {"a": 60, "b": 20, "c": 10, "d": 10}
    tasks = [PairTask(tile_id=f"{c}/{i}", satellite="", city=c)
             for c, n in sizes.items() for i in range(n)]
    for seed in range(6):
        out = splits_lib.assign(tasks, mode="city", val_fraction=0.1, test_fraction=0.2, seed=seed)
        assert abs(len(out["val"]) - 10) <= 10 and abs(len(out["test"]) - 20) <= 10, seed
        assert len(out["train"]) >= 60 - 10
    with pytest.raises(splits_lib.SplitError, match="empty val split"):
        splits_lib.assign(tasks[:80], mode="city", val_fraction=0.02, seed=0)  # smallest city: 10


def test_7_swapped_patterns_warn_and_modalities_are_told_apart(tmp_path):
    for i in range(4):
        p = make_pair(i, 64)
        assert looks_like(p.satellite) == "sat" and looks_like(p.map) == "map"
    src = tmp_path / "tiles"
    _pair_tree(src, {"": 4})
    rc, _, err, _ = _cli("prepare", "folders", src, "--sat-pattern", "map_*.png", "--map-pattern",
                         "aerial_*.png", "--out", tmp_path / "out", "--size", "32", "--workers",
                         "1", "--quiet", cwd=tmp_path)
    assert rc == 0 and "look swapped" in err and "--sat-pattern / --map-pattern" in err


def test_8_no_validation_split_is_said_once_and_labels_the_metrics(tmp_path, capsys):
    config = toy_config.get_config()
    config.total_steps, config.eval_every_steps, config.progress = 4, 2, False
    task = dataclasses.replace(toy_task.make_task(), eval_split=lambda c: "train")
    train_and_evaluate(config, tmp_path / "run", task=task)
    cap = capsys.readouterr()
    out = cap.out + cap.err
    assert out.count("no 'val' split in the data: evaluation runs on the 'train' split") == 1
    assert "step 2 (on train): eval/" in out
    evals = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if "eval/loss" in ln]
    assert evals and all(r["eval_split"] == "train" for r in evals)


def test_9_an_exported_model_is_self_contained(tok32, tmp_path):
    tok = tmp_path / "tok"
    shutil.copytree(tok32, tok)
    config = load_config(TINY, [f"--config.model.tokenizer_dir={tok}"])
    shapes = jax.eval_shape(lambda: em.init_params(config.model, jax.random.key(0)))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    # an export from before models carried their tokenizer: named by absolute path
    old = save_params(tmp_path / "old_model", params, dict(config.model), kind="earthmapper",
                      meta={"tokenizer": str(tok)})
    assert load(old).tokenizer.config["image_size"] == 32
    model_dir = earthmapper_task.export(params, config, tmp_path / "run")
    assert (model_dir / "tokenizer" / "config.json").is_file()
    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    shutil.move(model_dir, moved)
    shutil.rmtree(tok)  # the original tokenizer is gone too
    copied = tmp_path / "copy"
    shutil.copytree(moved, copied)
    for d in (moved, copied):
        m = load(d)
        assert m.tokenizer.config["image_size"] == 32 and m.config.vocab_size == 512
    with pytest.raises(CheckpointError, match="is gone; copy that tokenizer directory to"):
        load(old)


def test_11_ctrl_c_saves_like_sigterm(tmp_path):
    work = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "earthmapper_jax.main", "--config", "tests/toy_config.py",
         "--workdir", work, "--config.total_steps=1000000", "--config.eval_every_steps=-1",
         "--config.checkpoint.every_steps=1000000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        metrics = work / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    step = int(re.search(r"SIGINT: saved step (\d+), exiting", out + err).group(1))
    assert f"train: interrupted at step {step}" in out
    assert (work / "checkpoints" / str(step)).is_dir()


def test_11_a_second_ctrl_c_aborts():
    stop = StopSignals()
    stop._handle(signal.SIGINT, None)
    assert stop.requested == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)


def test_12_progress_off_a_terminal_prints_plain_lines(tmp_path):
    rc, so, se, _ = _cli("prepare", "synthetic", "--n", "8", "--out", tmp_path / "syn", "--size",
                         "16", "--workers", "1", cwd=tmp_path,
                         env={"EARTHMAPPER_PROGRESS_EVERY": "0.01"})
    assert rc == 0, se
    assert "\r" not in so + se
    assert re.search(r"prepare synthetic: 8/8 pair \(100%\)", so + se), so + se


# ----------------------------------------------------------------------------- the doc


def test_troubleshooting_doc_lists_the_messages_the_code_raises():
    text = troubleshooting_doc.DOC.read_text()
    assert troubleshooting_doc.generated_part(text) == troubleshooting_doc.catalogue(), (
        "docs/troubleshooting.md is out of date: run python -m tests.troubleshooting_doc")
    raised = {" ".join(m.split()) for _, m, _ in troubleshooting_doc.raise_sites()}
    curated = text.split(troubleshooting_doc.BEGIN)[0]
    explained = [m for line in curated.splitlines() if line.startswith("### ")
                 for m in re.findall(r"`` (.+?) ``", line)]
    assert len(explained) >= 15
    for m in explained:
        assert m in raised, f"docs/troubleshooting.md explains a message the code no longer has: {m}"
