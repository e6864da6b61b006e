"""`earthmapper evaluate` end to end: a small random-weight EarthMapper on a synthetic split, both
directions (complete table), a baseline folder scored with --generated, interruption + resume,
and the bad inputs (one line each). Feature weights are random, in the real files' key layouts
(tests/fixtures/evaluation/meta.json), so the numbers check the plumbing, not quality."""

import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest
from configs import earthmapper_tiny
from fixtures.make_evaluation_fixtures import random_state_dict
from PIL import Image

import earthmapper_jax
from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.cli import main as cli_main
from earthmapper_jax.data_prep import synthetic as syn_prep
from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.evaluation import run as eval_run
from earthmapper_jax.io.checkpoint import read_config, save_params
from earthmapper_jax.io.pth import save_state_dict
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.train import earthmapper_task as emt

# The smallest model that runs the real path (compiling the samplers dominates the test).
TOK_CFG = dict(ch=32, vocab_size=64, z_channels=4, image_size=32, ch_mult=(1, 2, 2, 4),
               num_res_blocks=1, using_sa=False, using_mid_sa=False, patch_nums=(1, 2, 4))
VAL_TILES = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory, fixtures_dir):
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    syn_prep.prepare(data, 2 * VAL_TILES, size=TOK_CFG["image_size"], seed=3, val_fraction=0.5,
                     progress=False)
    tok = tok_lib.Tokenizer.init(TOK_CFG, jax.random.key(0))
    tok.save(root / "tokenizer")
    mc = em.model_config("tiny", attention="einsum", sample_attention="einsum", depth=1,
                         embed_dim=64, num_heads=2, vocab_size=64, cvae=4,
                         patch_nums=TOK_CFG["patch_nums"])
    model_dir = save_params(root / "model", em.init_params(mc, jax.random.key(1)), mc,
                            kind="earthmapper", meta={"tokenizer": str(root / "tokenizer")})
    meta = json.loads((fixtures_dir / "evaluation" / "meta.json").read_text())
    weights = root / "weights"
    weights.mkdir()
    save_state_dict(weights / "pt_inception.pth", random_state_dict(meta["inception"]["layout"], 1))
    lp = meta["lpips"]["alex"]
    save_state_dict(weights / "alexnet.pth", random_state_dict(lp["backbone_layout"], 2))
    save_state_dict(weights / "alex.pth", random_state_dict(lp["lin_layout"], 3))
    flags = ["--data", str(data), "--split", "val", "--batch-size", "8", "--quiet",
             "--guidance", "0,0,0", "--no-complexity",
             "--inception-weights", str(weights / "pt_inception.pth"),
             "--lpips-backbone", str(weights / "alexnet.pth"),
             "--lpips-weights", str(weights / "alex.pth")]
    return dict(root=root, data=data, model=model_dir, tokenizer=root / "tokenizer",
                weights=weights, flags=flags)


@pytest.fixture(scope="module")
def full(setup):
    """The reference run: both directions through the command."""
    out = setup["root"] / "eval_full"
    rc = cli_main(["evaluate", "--checkpoint", str(setup["model"]), "--direction", "both",
                   "--out", str(out), "--cache-dir", str(setup["root"] / "cache")] + setup["flags"])
    assert rc == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_both_directions_write_a_complete_table(full):
    out, m = full
    assert m["map2sat"]["split"] == m["sat2map"]["split"] == "val"
    assert m["map2sat"]["n"] == m["sat2map"]["n"] == VAL_TILES
    for key in ("fid", "kid", "kid_scaled", "precision", "recall"):
        assert np.isfinite(m["map2sat"][key]), key
    assert m["map2sat"]["kid_scaled"] == pytest.approx(100 * m["map2sat"]["kid"])
    for key in ("ssim", "psnr", "rmse", "lpips"):
        assert np.isfinite(m["sat2map"][key]), key
    row = (out / "table.md").read_text().splitlines()[4]  # title, blank, header, rule, this run
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 10 and "-" not in cells[2:], row
    assert "KID (×100)" in (out / "table.md").read_text() and "36.54" in (out / "table.md").read_text()
    assert (out / "samples.png").stat().st_size > 0
    for d in ("sat2map", "map2sat"):
        assert len(list((out / "generated" / d).glob("*.png"))) == VAL_TILES
    assert len(list((out.parent / "cache").glob("val-*-inception-*.npz"))) == 1


def test_generated_folder_scores_like_the_model(setup, full, tmp_path):
    out, m = full
    # The model's saved outputs, as a baseline folder: equal scores (8-bit rounding first).
    rc = cli_main(["evaluate", "--generated", str(out / "generated"), "--direction", "both",
                   "--out", str(tmp_path / "eval"), "--cache-dir", str(setup["root"] / "cache")]
                  + setup["flags"])
    assert rc == 0
    g = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for d in ("sat2map", "map2sat"):
        for key in ("ssim", "psnr", "rmse", "lpips", "fid", "kid", "precision", "recall"):
            if key in m[d]:
                assert g[d][key] == pytest.approx(m[d][key], rel=1e-5, abs=1e-6), (d, key)
    assert "--generated" in (tmp_path / "eval" / "table.md").read_text()
    # `earthmapper translate`'s names (<tile>_map.png) are matched too
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (out / "generated" / "sat2map").glob("*.png"):
        shutil.copy(p, flat / f"{p.stem}_map.png")
    rc = cli_main(["evaluate", "--generated", str(flat), "--direction", "sat2map",
                   "--out", str(tmp_path / "eval2"), "--no-lpips"] + setup["flags"])
    assert rc == 0
    g2 = json.loads((tmp_path / "eval2" / "metrics.json").read_text())["sat2map"]
    assert g2["ssim"] == pytest.approx(m["sat2map"]["ssim"], rel=1e-6) and "lpips" not in g2


def test_interrupted_evaluation_resumes_to_the_same_metrics(setup, full, tmp_path, monkeypatch):
    _, m = full
    model = earthmapper_jax.load(setup["model"])
    real_generate, calls = eval_run._generate, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4:  # sat2map done, the first map2sat batch saved, then Ctrl-C
            raise KeyboardInterrupt
        return real_generate(*a, **k)

    def request(**kw):
        return eval_run.Request(
            data=str(setup["data"]), split="val", out=str(tmp_path / "eval"), batch_size=8,
            inception_weights=str(setup["weights"] / "pt_inception.pth"),
            lpips_backbone=str(setup["weights"] / "alexnet.pth"),
            lpips_weights=str(setup["weights"] / "alex.pth"), progress=False,
            sampling={"guidance": (0.0, 0.0, 0.0), "complexity": False},
            cache_dir=str(setup["root"] / "cache"), **kw)

    monkeypatch.setattr(eval_run, "_generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        eval_run.evaluate(request(), model=model)
    assert not (tmp_path / "eval" / "metrics.json").exists()
    monkeypatch.setattr(eval_run, "_generate", real_generate)
    assert cli_main(["evaluate", "--checkpoint", str(setup["model"]), "--out",
                     str(tmp_path / "eval")] + setup["flags"]) == 1  # exists, no --resume
    calls.clear()
    monkeypatch.setattr(eval_run, "_generate", interrupted)
    resumed = eval_run.evaluate(request(resume=True), model=model)
    assert len(calls) == 1  # only the missing batch was translated
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert got == json.loads(json.dumps(resumed))
    for d in ("sat2map", "map2sat"):
        assert got[d] == m[d]


def _one_line_error(capsys, argv):
    assert cli_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


def test_bad_inputs_say_one_line(setup, full, tmp_path, capsys):
    out, _ = full
    base = ["evaluate", "--checkpoint", str(setup["model"]), "--out", str(tmp_path / "e")]
    flags = setup["flags"]
    # missing Inception weights: named with its source and flag, before any translation
    argv = base + flags[:flags.index("--inception-weights")] + [
        "--inception-weights", str(tmp_path / "pt_inception-2015-12-05-6726825d.pth")] + flags[-4:]
    err = _one_line_error(capsys, argv)
    assert "pt_inception-2015-12-05" in err and "--inception-weights" in err and "github" in err
    assert not (tmp_path / "e").exists()
    # missing LPIPS heads
    err = _one_line_error(capsys, base + flags[:-2] + ["--lpips-weights", str(tmp_path / "alex.pth"),
                                                      "--direction", "sat2map"])
    assert "--lpips-weights" in err and "alex.pth" in err
    # split not found
    err = _one_line_error(capsys, base + flags + ["--split", "test"])
    assert err.endswith(f"split 'test' not found in {setup['data']}; it has: train, val")
    # a tokenizer directory as --checkpoint
    err = _one_line_error(capsys, ["evaluate", "--checkpoint", str(setup["tokenizer"]), "--out",
                                   str(tmp_path / "e")] + flags)
    assert "'tokenizer' checkpoint" in err and "EarthMapper" in err
    # an existing --out without --resume / --overwrite
    err = _one_line_error(capsys, base[:-1] + [str(out)] + flags)
    assert "--resume" in err and "--overwrite" in err
    # wrong image size in --generated
    bad = tmp_path / "bad" / "sat2map"
    bad.mkdir(parents=True)
    for p in (out / "generated" / "sat2map").glob("*.png"):
        Image.open(p).resize((24, 24)).save(bad / p.name)
    err = _one_line_error(capsys, ["evaluate", "--generated", str(bad.parent), "--direction",
                                   "sat2map", "--out", str(tmp_path / "g")] + flags)
    assert "24x24, expected 32x32" in err


def test_periodic_metrics_join_the_training_evaluation(setup):
    config = earthmapper_tiny.get_config("paper_tiny")
    config.model = ml_collections.ConfigDict(read_config(setup["model"])["config"])
    config.model.tokenizer_dir = str(setup["tokenizer"])
    config.data.dir, config.data.eval_split = str(setup["data"]), "val"
    config.data.image_size = TOK_CFG["image_size"]
    config.sample_options = ml_collections.ConfigDict({"guidance": (0.0, 0.0, 0.0), "complexity": False})
    model = earthmapper_jax.load(setup["model"])
    frozen = emt.load_frozen(config)
    assert emt.eval_host(model.params, jax.random.key(0), config, frozen) == {}  # off by default
    config.eval.metrics, config.eval.tiles = True, 8
    config.eval.lpips_backbone = str(setup["weights"] / "alexnet.pth")
    config.eval.lpips_weights = str(setup["weights"] / "missing.pth")
    with pytest.raises(CheckpointError, match="config.eval.lpips_weights"):
        emt.load_frozen(config)  # at the start of the run, not at its first evaluation
    config.eval.lpips_weights = str(setup["weights"] / "alex.pth")
    m = emt.eval_host(model.params, jax.random.key(0), config, emt.load_frozen(config))
    assert set(m) == {"sat2map_ssim", "sat2map_psnr", "sat2map_rmse", "sat2map_lpips"}
    assert all(np.isfinite(v) for v in m.values()) and 0 < m["sat2map_rmse"] < 1
