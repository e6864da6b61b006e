"""translate-area: a whole georeferenced scene translated tile by tile (tiny random-weight model).

- every tile's lat/lon is its centre through the scene's CRS (EPSG:4326, 3857, UTM) within
  1e-7° of an independent pyproj computation;
- the plan: blocks tile the scene exactly, a tile's context comes from earlier steps, tiles of
  one wave never overlap; seam weights;
- the CLI: output GeoTIFF with the input's CRS and transform + PNG preview (16-bit stretched;
  --gsd resampled); XYZ in and out;
  bad input one line each; killed mid-scene and rerun = the uninterrupted output (the
  out-painting case is marked slow: it compiles the in-painting sampler, ~30 s CPU more).
"""

import jax
import numpy as np
import pyproj
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin

import earthmapper_jax
from earthmapper_jax import tokenizer as tok_lib
from earthmapper_jax.area import raster
from earthmapper_jax.area.plan import Plan
from earthmapper_jax.area.sidecar import Sidecar
from earthmapper_jax.area.translate import tile_coords
from earthmapper_jax.cli import main as cli_main
from earthmapper_jax.data.synthetic_city import make_pair
from earthmapper_jax.errors import InputError
from earthmapper_jax.io.checkpoint import save_params
from earthmapper_jax.models import earthmapper as em

TOK_CFG = dict(ch=32, vocab_size=512, z_channels=8, image_size=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1,
               using_sa=False, using_mid_sa=False, patch_nums=(1, 2, 4))
T = TOK_CFG["image_size"]
FAST = ["--top-k", "20", "--guidance", "0,0,0", "--batch-size", "4", "--overlap", "8"]


def _perturb(params, seed, scale=0.05):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A saved tiny model, and the loaded model every CLI call of this module reuses (one
    compilation per sampler configuration instead of one per call)."""
    root = tmp_path_factory.mktemp("area")
    tok = tok_lib.Tokenizer.init(TOK_CFG, jax.random.key(0))
    tok.save(root / "tok")
    mc = em.model_config("tiny", attention="einsum", sample_attention="einsum", patch_nums=TOK_CFG["patch_nums"])
    params = _perturb(em.init_params(mc, jax.random.key(1)), 2)
    d = save_params(root / "em", params, mc, kind="earthmapper", meta={"tokenizer": str(root / "tok")})
    return d, earthmapper_jax.load(d)


@pytest.fixture
def cli(ckpt, monkeypatch):
    d, model = ckpt
    monkeypatch.setattr(earthmapper_jax, "load", lambda directory, **kw: model)
    return lambda *argv: cli_main(["translate-area", *map(str, argv), "--checkpoint", str(d)])


def _scene_pixels(h, w, seed=3):
    """A satellite-like scene: synthetic-city tiles side by side."""
    n = int(np.ceil(max(h, w) / 64))
    rows = [np.concatenate([make_pair(seed + 10 * i + j, 64).satellite for j in range(n)], 1) for i in range(n)]
    return np.concatenate(rows, 0)[:h, :w]


def _write_tif(path, pixels, crs=None, transform=None, dtype="uint8"):
    h, w, bands = pixels.shape
    profile = dict(driver="GTiff", height=h, width=w, count=bands, dtype=dtype)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(pixels, -1, 0).astype(dtype))
    return path


SCENES = {  # CRS -> (origin x, origin y, pixel size) of a small scene near Beijing
    "EPSG:4326": (116.30, 39.95, 5.4e-6),
    "EPSG:3857": (12946000.0, 4858000.0, 0.6),
    "EPSG:32650": (440000.0, 4422000.0, 0.6),  # UTM zone 50N
}


@pytest.mark.parametrize("crs", sorted(SCENES))
def test_tile_centres_match_pyproj(tmp_path, crs):
    x0, y0, px = SCENES[crs]
    tr = from_origin(x0, y0, px, px)
    path = _write_tif(tmp_path / "s.tif", _scene_pixels(150, 200), CRS.from_string(crs), tr)
    scene = raster.open_scene(path, tile=T)
    plan = Plan(scene.height, scene.width, T, 8)
    got = tile_coords(scene, plan, plan.tiles())
    to_ll = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for (r, c), (lat, lon) in zip(plan.tiles(), got):
        col, row = c * plan.stride + T / 2, r * plan.stride + T / 2
        lo, la = to_ll.transform(x0 + col * px, y0 - row * px)
        assert abs(lat - la) <= 1e-7 and abs(lon - lo) <= 1e-7
    scene.close()


def test_plan_blocks_steps_and_weights():
    for seam in ("none", "blend", "outpaint"):
        plan = Plan(150, 200, T, 8, seam)
        hits = np.zeros((150, 200), int)
        for _, (y0, y1, x0, x1) in plan.blocks():
            hits[y0:y1, x0:x1] += 1
        assert (hits == 1).all()
        steps = plan.steps(3)
        step_of = {t: i for i, s in enumerate(steps) for t in s}
        assert sorted(step_of) == plan.tiles()
        for t, i in step_of.items():  # out-painting context comes from earlier steps
            assert all(step_of[n] < i if seam == "outpaint" else step_of[n] <= i
                       for n in plan.neighbours_before(*t))
        if seam == "outpaint":
            for s in steps:  # tiles of one step never overlap
                for a in s:
                    for b in s:
                        if a != b:
                            assert abs(a[0] - b[0]) > 1 or abs(a[1] - b[1]) * plan.stride >= T
        # weights: a partition of the scene (normalised), hard 0/1 for none
        ones = {t: np.full((T, T, 3), 200, np.uint8) for t in plan.tiles()}
        px, cov = plan.compose(0, 150, 0, 200, ones)
        assert cov.all() and (px == 200).all()
        if seam == "none":
            assert set(np.unique(plan.weight(1, 1))) <= {0.0, 1.0}


def test_translate_area_geotiff_roundtrip_and_preview(cli, tmp_path, capsys):
    tr = from_origin(440000.0, 4422000.0, 0.6, 0.6)
    src = _write_tif(tmp_path / "scene.tif", _scene_pixels(56, 72), CRS.from_epsg(32650), tr)
    out = tmp_path / "map.tif"
    assert cli(src, "--direction", "sat2map", "--out", out, "--seam", "none", *FAST) == 0
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.transform == a.transform
        assert (b.height, b.width, b.count, b.dtypes[0]) == (56, 72, 3, "uint8")
        assert b.read().std() > 0
    assert Image.open(tmp_path / "map.png").size == (72, 56)
    assert not (tmp_path / "map.tif.parts").exists()
    # 16-bit scene: stretched as prepare does; output keeps the georeferencing
    src16 = _write_tif(tmp_path / "s16.tif", _scene_pixels(40, 40).astype(np.uint16) * 200, CRS.from_epsg(3857),
                       from_origin(12946000.0, 4858000.0, 0.6, 0.6), dtype="uint16")
    assert cli(src16, "--direction", "sat2map", "--out", tmp_path / "m16.tif", "--seam", "blend", *FAST) == 0
    with rasterio.open(tmp_path / "m16.tif") as b:
        assert b.crs == CRS.from_epsg(3857) and b.shape == (40, 40)
    # a 1.2 m/px scene resampled to the model's 0.6 m/px: twice the pixels, same extent
    src12 = _write_tif(tmp_path / "s12.tif", _scene_pixels(20, 24), CRS.from_epsg(3857),
                       from_origin(12946000.0, 4858000.0, 1.2, 1.2))
    assert cli(src12, "--direction", "sat2map", "--out", tmp_path / "m12.tif", "--seam", "none", "--gsd", "1.2",
               *FAST) == 0
    with rasterio.open(tmp_path / "m12.tif") as b:
        assert b.shape == (40, 48) and b.transform == from_origin(12946000.0, 4858000.0, 0.6, 0.6)


def test_translate_area_xyz_in_and_out(cli, tmp_path):
    z, n = 17, 24
    pix = _scene_pixels(2 * n, 3 * n)
    for ty in range(2):
        for tx in range(3):
            d = tmp_path / "xyz" / str(z) / str(105000 + tx)
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pix[ty * n:(ty + 1) * n, tx * n:(tx + 1) * n]).save(d / f"{48000 + ty}.png")
    out = tmp_path / "xyz_map"
    assert cli(tmp_path / "xyz", "--direction", "sat2map", "--out", out, "--seam", "none", *FAST) == 0
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert got == sorted(f"{z}/{105000 + tx}/{48000 + ty}.png" for tx in range(3) for ty in range(2))
    assert Image.open(out / f"{z}/105000/48000.png").size == (n, n)
    # an XYZ scene's tile centre is its Mercator position
    scene = raster.open_scene(tmp_path / "xyz")
    lat, lon = scene.centres([(n / 2, n / 2)])[0]
    from earthmapper_jax.data_prep import xyz
    want = xyz.tile_centre(z, 105000, 48000)
    assert abs(lat - want[0]) < 1e-7 and abs(lon - want[1]) < 1e-7


def _bad_cases(tmp_path):
    pix = _scene_pixels(40, 40)
    tr = from_origin(440000.0, 4422000.0, 0.6, 0.6)
    local = CRS.from_wkt('LOCAL_CS["arbitrary",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    exists = _write_tif(tmp_path / "exists.tif", pix, CRS.from_epsg(32650), tr)
    return {
        "plain": (_write_tif(tmp_path / "plain.tif", pix), [], "not georeferenced"),
        "bands": (_write_tif(tmp_path / "two.tif", pix[..., :2], CRS.from_epsg(32650), tr), [], "2 band"),
        "small": (_write_tif(tmp_path / "small.tif", pix[:20], CRS.from_epsg(32650), tr), [], "smaller than one"),
        "crs": (_write_tif(tmp_path / "local.tif", pix, local, tr), [], "cannot be transformed"),
        "exists": (exists, ["--out", str(exists)], "exists; pass --overwrite"),
    }


@pytest.mark.parametrize("case", ["plain", "bands", "small", "crs", "exists"])
def test_bad_input_one_line(cli, tmp_path, capsys, case):
    src, extra, msg = _bad_cases(tmp_path)[case]
    args = [src, "--direction", "sat2map", "--out", tmp_path / "o.tif", *FAST] + extra
    assert cli(*args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err
    if case == "plain":  # --coords stands in for the georeferencing
        assert cli(*args, "--coords", "39.9,116.4", "--seam", "none") == 0
        with rasterio.open(tmp_path / "o.tif") as b:
            assert b.crs is None and b.shape == (40, 40)


@pytest.mark.parametrize("seam", ["none", pytest.param("outpaint", marks=pytest.mark.slow)])
def test_killed_and_rerun_is_identical(cli, tmp_path, monkeypatch, seam):
    """outpaint (slow: compiles the in-painting sampler) is the mode where it matters: a
    resumed tile's canvas comes from tiles reloaded from the sidecar."""
    tr = from_origin(12946000.0, 4858000.0, 0.6, 0.6)
    src = _write_tif(tmp_path / "scene.tif", _scene_pixels(56, 96), CRS.from_epsg(3857), tr)
    args = [src, "--direction", "sat2map", *FAST, "--seed", "7", "--seam", seam]
    assert cli(*args, "--out", tmp_path / "whole.tif") == 0

    real_mark = Sidecar.mark
    stop = 1 if seam == "none" else 3  # of 2 raster steps / 6 waves

    def killed(self, steps_done):
        real_mark(self, steps_done)
        if steps_done == stop:
            raise KeyboardInterrupt

    monkeypatch.setattr(Sidecar, "mark", killed)
    assert cli(*args, "--out", tmp_path / "resumed.tif") == 130
    assert not (tmp_path / "resumed.tif").exists()  # never half-valid under the final name
    assert (tmp_path / "resumed.tif.parts" / "progress.json").exists()
    monkeypatch.setattr(Sidecar, "mark", real_mark)
    calls = []
    monkeypatch.setattr(Sidecar, "save_tile", lambda self, r, c, px, f=Sidecar.save_tile: (calls.append((r, c)), f(self, r, c, px)))
    assert cli(*args, "--out", tmp_path / "resumed.tif") == 0
    plan = Plan(56, 96, T, 8, seam)
    assert len(calls) == len(plan.tiles()) - sum(len(s) for s in plan.steps(4)[:stop])  # continued, not restarted
    with rasterio.open(tmp_path / "whole.tif") as a, rasterio.open(tmp_path / "resumed.tif") as b:
        assert np.array_equal(a.read(), b.read())
    # other settings on a stale sidecar: one line, unless --overwrite
    monkeypatch.setattr(Sidecar, "mark", killed)
    assert cli(*args, "--out", tmp_path / "third.tif") == 130
    monkeypatch.setattr(Sidecar, "mark", real_mark)
    with pytest.raises(InputError, match="other settings"):
        Sidecar(tmp_path / "third.tif", {"seam": "none"})
