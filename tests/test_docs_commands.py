"""The documented real-data recipes run as written, so no documented command can rot.

Reads the fenced ```bash blocks of README.md ("Train on real data") and docs/training.md ("CNSatMap
(the paper's run)", "Pre-tokenised EarthMapper training"), and runs every command of each block
in order, in a scratch workspace where the paths of the docs exist:

  /data/CNSatMap     a CNSatMap-layout folder (ROOT/<city>/{sat,map}/NNNN.png) of synthetic
                     128 px tiles from three cities
  *.pth              random-weight checkpoints in the real PyTorch formats: VAR's VQ-VAE and
                     VAR transformer (tests/fixtures/var_vae/vae.pth, var_model/var_l2.pth,
                     written by the real VAR code) and DINOv2 (tests/fixtures/dinov2_mlp.pth)

Absolute paths of the docs (/data, /ckpt) are moved into the workspace, `earthmapper` and
`python` become this interpreter, and to each command only tiny-size overrides are appended
(`TINY`: image size, the fixtures' model shapes, two training steps); nothing else changes.
"""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from earthmapper_jax.data import synthetic_city as synthetic
from tests.tiny_em_model import FAST_COMPILE

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
SIZE = 128  # the VQ-VAE fixture's image size (16× down: last scale 8)

_MODEL = ("--config.model.depth=2 --config.model.embed_dim=128 --config.model.num_heads=2 "
          "--config.model.vocab_size=512 --config.model.cvae=8 --config.model.patch_nums=(1,2,3,4,6,8) "
          "--config.model.si_layer=1 --config.model.si_hidden=32 --config.model.si_dim=128 "
          "--config.model.si_image_size=56 --config.model.dtype=float32 --config.model.drop_path_rate=0.0")
_RUN = ("--config.total_steps=2 --config.batch_size=2 --config.data.image_size=128 --config.eval_every_steps=-1 "
        "--config.sample_every_steps=-1 --config.log_every_steps=1 --config.progress=False "
        "--config.checkpoint.async_save=False")
# command prefix -> tiny-size overrides appended to it
TINY = {
    "prepare cnsatmap": "--size 128 --val-fraction 0.3 --test-fraction 0.3 --workers 1 --quiet",
    "convert var-vae": "--image-size 128 --patch-nums 1,2,3,4,6,8",
    "prepare tokens": "--batch-size 4 --si-image-size 56 --variants none --quiet",
    "earthmapper_jax.main": f"{_MODEL} {_RUN}",
    "single_gpu.sh": f"{_MODEL} {_RUN}",
    "translate": "--batch-size 2",
}


def bash_blocks(path, heading):
    """Commands (continuations joined, comments dropped) of the ```bash blocks under `heading`."""
    text = (ROOT / path).read_text()
    start = text.index(heading)
    nxt = re.search(r"\n##+ ", text[start + len(heading):])
    section = text[start: start + len(heading) + (nxt.start() if nxt else len(text))]
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                cmds.append(line)
    return cmds


def _tile_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def make_workspace(ws):
    """The docs' inputs under `ws` (see module doc)."""
    for i, city in enumerate(["beijing", "shanghai", "wuhan", "xian"]):
        for j in range(3):
            s = synthetic.pair_seed(7, 10 * i + j)
            layout = synthetic.make_layout(s)
            lab = synthetic.render_labels(layout, SIZE)
            _tile_png(ws / "data/CNSatMap" / city / "sat" / f"{j:04d}.png",
                      synthetic.render_satellite(layout, SIZE, s, lab))
            _tile_png(ws / "data/CNSatMap" / city / "map" / f"{j:04d}.png", synthetic.render_map(layout, SIZE))
            if i == 0:
                _tile_png(ws / "tiles" / f"{j:04d}.png", synthetic.render_satellite(layout, SIZE, s, lab))
    for name, src in (("vae_ch160v4096z32.pth", "var_vae/vae.pth"), ("var_d24.pth", "var_model/var_l2.pth"),
                      ("dinov2_vitb14_pretrain.pth", "dinov2_mlp.pth")):
        shutil.copy(FIX / src, ws / name)
        (ws / "ckpt").mkdir(exist_ok=True)
        shutil.copy(FIX / src, ws / "ckpt" / name)
    return ws


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("docs"))


def _command(line, ws):
    line = line.replace(" /data/", f" {ws}/data/").replace(" /ckpt/", f" {ws}/ckpt/").replace("=/data/", f"={ws}/data/")
    line = line.replace("=/ckpt/", f"={ws}/ckpt/")
    argv = shlex.split(line)
    if argv[0] == "earthmapper":
        argv = [sys.executable, "-m", "earthmapper_jax.cli"] + argv[1:]
    elif argv[0] == "python":
        argv = [sys.executable] + argv[1:]
    elif argv[0].startswith("launch/"):
        argv = ["bash", str(ROOT / argv[0])] + argv[1:]
    argv = [str(ROOT / a) if re.match(r"configs/\w+\.py", a) else a for a in argv]
    argv = [f"--config={ROOT / a[len('--config='):]}" if a.startswith("--config=configs/") else a for a in argv]
    joined = " ".join(argv)
    for key, extra in TINY.items():
        if key in joined:
            argv += shlex.split(extra)
    return argv


def _run_block(cmds, ws, log=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PY=sys.executable, JAX_PLATFORMS="cpu",
               XLA_PYTHON_CLIENT_PREALLOCATE="false")
    env["XLA_FLAGS"] = FAST_COMPILE  # no GPU scheduler flags on CPU; the commands run 2 steps
    for line in cmds:
        argv = _command(line, ws)
        t0 = time.time()
        r = subprocess.run(argv, cwd=ws, env=env, capture_output=True, text=True, timeout=900)
        if log:
            log(f"{time.time() - t0:6.1f} s  rc {r.returncode}  {line}\n{r.stderr[-1500:] if r.returncode else ''}")
        assert r.returncode == 0, f"{line}\n-> {' '.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


def test_readme_train_on_real_data(workspace):
    cmds = bash_blocks("README.md", "## Train on real data")
    assert any("cnsatmap_d24" in c for c in cmds) and any("var_init" in c for c in cmds)
    _run_block(cmds, workspace)
    assert (workspace / "runs/em_d24/model").is_dir()
    assert any((workspace / "maps").iterdir())


def test_training_md_papers_run(tmp_path_factory):
    # its own workspace: the README block converts into the same ckpt/ paths
    workspace = make_workspace(tmp_path_factory.mktemp("docs_training"))
    cmds = bash_blocks("docs/training.md", "## CNSatMap (the paper's run)")
    assert any("cnsatmap_d24" in c for c in cmds)
    _run_block(cmds, workspace)
    assert (workspace / "runs/d24/model").is_dir()


def test_paper_config_without_var_init_stops_at_startup(workspace):
    """The paper's config without --config.model.var_init: one line, before any step."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    argv = [sys.executable, "-m", "earthmapper_jax.main", "--config", str(ROOT / "configs/earthmapper_train.py:cnsatmap_d24"),
            "--workdir", str(workspace / "runs/no_var"), "--config.data.dir=" + str(workspace / "nowhere"),
            "--config.model.tokenizer_dir=" + str(workspace / "nowhere"),
            "--config.model.si_dinov2=" + str(workspace / "dinov2_vitb14_pretrain.pth")] + shlex.split(_MODEL)
    r = subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "config.model.var_init is not set" in r.stderr and "var_init=none" in r.stderr, r.stderr[-2000:]
