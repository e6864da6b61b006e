"""Converters on small fixture trees built here: paired folders, city folders, prefix pairs,
sidecars (CSV/JSON), coordinates in file names, XYZ paths, GeoTIFF bounds (4326/3857), the
pix2pix side-by-side and CycleGAN layouts, generic patterns, filters and skip accounting,
round-trip equality of images and metadata, the synthetic city through the same path, and
that the converters install as earthmapper_jax.data_prep."""

import configparser
import functools
import json
import math
import os
import pathlib

import numpy as np
from PIL import Image

from earthmapper_jax.cli import main as cli_main
from earthmapper_jax.cli.prepare import PREPARE_MODULES
from earthmapper_jax.data import example, synthetic_city, tfrecord
from earthmapper_jax.data_prep import cnsatmap, common, folders, geotiff, pix2pix_maps, xyz
from earthmapper_jax.data_prep import synthetic as syn_prep
from earthmapper_jax.data_prep.splits import assign
from earthmapper_jax.data.writer import read_manifest, split_shards

S = 32


def _pair(i, size=S):
    return synthetic_city.make_pair(100 + i, size)


def _save(path, arr, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **({"quality": 95} if str(path).endswith(".jpg") else {}))


def _records(d, split):
    out = {}
    for p in split_shards(d, split):
        for _, data in tfrecord.iter_records(p):
            rec = example.parse(data)
            out[rec.tile_id] = rec
    return out


def _convert(tasks_or_splits, out, size=None, **kw):
    opts = common.LoadOptions(image_size=size, min_map_std=kw.pop("min_map_std", None), source="test")
    splits = tasks_or_splits if isinstance(tasks_or_splits, dict) else {"train": tasks_or_splits}
    return common.convert(splits, out, load_fn=functools.partial(common.load_pair, opts=opts), converter="test",
                          args={}, progress=False, **kw)


def test_paired_folders_with_csv_sidecar_roundtrip(tmp_path):
    root, rows = tmp_path / "cn", ["name,lat,lon,city"]
    for i in range(4):
        p = _pair(i)
        _save(root / "sat" / f"t{i}.png", p.satellite)
        _save(root / "map" / f"t{i}.png", p.map)
        rows.append(f"t{i},{30 + i / 10},{120 + i / 10},hangzhou")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    tasks, skips = cnsatmap.list_tasks(root)
    assert skips == [] and [t.coords_source for t in tasks] == ["sidecar"] * 4
    summary = _convert(tasks, tmp_path / "out")
    assert summary["written"] == {"train": 4} and summary["coords"] == {"sidecar": 4}
    recs = _records(tmp_path / "out", "train")
    for i in range(4):
        r = recs[f"t{i}"]
        assert r.satellite == (root / "sat" / f"t{i}.png").read_bytes()  # source bytes kept
        assert r.map == (root / "map" / f"t{i}.png").read_bytes()
        assert abs(r.latitude - (30 + i / 10)) < 1e-5 and abs(r.longitude - (120 + i / 10)) < 1e-4
        assert (r.city, r.source, r.height, r.original_width) == ("hangzhou", "test", S, S)


def test_city_folders_city_split_and_random_split_are_reproducible(tmp_path):
    root = tmp_path / "cn"
    for c, city in enumerate(("beijing", "shanghai", "wuhan", "xian")):
        for i in range(3):
            p = _pair(10 * c + i, 16)
            _save(root / city / "satellite" / f"{i}.png", p.satellite)
            _save(root / city / "maps" / f"{i}.png", p.map)
    tasks, skips = cnsatmap.list_tasks(root, coords="none")
    assert not skips and {t.city for t in tasks} == {"beijing", "shanghai", "wuhan", "xian"}
    sp = assign(tasks, mode="city", test_cities=("wuhan",), val_cities=("xian",))
    assert {t.city for t in sp["test"]} == {"wuhan"} and {t.city for t in sp["val"]} == {"xian"}
    auto = assign(tasks, mode="city", test_fraction=0.25, seed=3)
    assert len({t.city for t in auto["test"]}) == 1 and len(auto["test"]) == 3
    assert [t.tile_id for t in assign(tasks, mode="city", test_fraction=0.25, seed=3)["test"]] == \
        [t.tile_id for t in auto["test"]]
    r1 = assign(tasks, mode="random", val_fraction=0.25, seed=7)
    r2 = assign(tasks, mode="random", val_fraction=0.25, seed=7)
    assert [t.tile_id for t in r1["val"]] == [t.tile_id for t in r2["val"]] and len(r1["val"]) == 3
    assert len(r1["train"]) == 9


def test_prefix_pairs_json_sidecar_filename_coords_and_preset_splits(tmp_path):
    root = tmp_path / "cn"
    p0, p1, p2 = _pair(0), _pair(1), _pair(2)
    _save(root / "train" / "sat_a.png", p0.satellite)
    _save(root / "train" / "map_a.png", p0.map)
    _save(root / "train" / "0002_Houston_29.62732_-95.41556_sat.jpg", p1.satellite)
    _save(root / "train" / "0002_Houston_29.62732_-95.41556_map.png", p1.map)
    _save(root / "test" / "c_sat.png", p2.satellite)
    _save(root / "test" / "c_map.png", p2.map)
    (root / "coords.json").write_text(json.dumps({"train/a": [22.5, 114.1], "c": {"west": 113.0, "south": 23.0,
                                                                                  "east": 113.2, "north": 23.2}}))
    tasks, skips = cnsatmap.list_tasks(root)
    by = {t.tile_id: t for t in tasks}
    assert not skips and set(by) == {"train/a", "train/0002_Houston_29.62732_-95.41556", "test/c"}
    assert (by["train/a"].lat, by["train/a"].lon, by["train/a"].coords_source) == (22.5, 114.1, "sidecar")
    h = by["train/0002_Houston_29.62732_-95.41556"]
    assert (h.lat, h.lon, h.city, h.coords_source) == (29.62732, -95.41556, "Houston", "filename")
    assert (round(by["test/c"].lat, 6), round(by["test/c"].lon, 6)) == (23.1, 113.1)
    splits = assign(tasks)  # auto: the train/ and test/ folders
    assert {k: len(v) for k, v in splits.items()} == {"test": 1, "train": 2}
    _convert(splits, tmp_path / "out")
    assert _records(tmp_path / "out", "train")["train/0002_Houston_29.62732_-95.41556"].satellite_format == "jpeg"


def test_xyz_tiles_give_web_mercator_centres(tmp_path):
    root = tmp_path / "xyz"
    tiles = [(15, 26971, 12416), (16, 53943, 24833)]
    for i, (z, x, y) in enumerate(tiles):
        p = _pair(i)
        _save(root / "sat" / str(z) / str(x) / f"{y}.png", p.satellite)
        _save(root / "map" / str(z) / str(x) / f"{y}.png", p.map)
    _save(root / "sat" / "15_26972_12416.png", _pair(5).satellite)
    _save(root / "map" / "15_26972_12416.png", _pair(5).map)
    tasks, _ = cnsatmap.list_tasks(root)
    by = {t.tile_id: t for t in tasks}
    for z, x, y in tiles + [(15, 26972, 12416)]:
        t = by[f"{z}/{x}/{y}"] if f"{z}/{x}/{y}" in by else by[f"{z}_{x}_{y}"]
        assert t.coords_source == "xyz" and (t.lat, t.lon) == xyz.tile_centre(z, x, y)
        assert xyz.latlon_to_tile(t.lat, t.lon, z) == (x, y)
    lat, lon = xyz.tile_centre(15, 26971, 12416)
    assert abs(lat - 39.9055) < 1e-3 and abs(lon - 116.3177) < 1e-3  # central Beijing


def test_geotiff_bounds_in_4326_and_3857(tmp_path):
    root = tmp_path / "geo"
    p0, p1 = _pair(0), _pair(1)
    os.makedirs(root / "sat")
    geotiff.write_geotiff(root / "sat" / "a.tif", p0.satellite, (116.0, 39.0, 116.2, 39.4), 4326)
    _save(root / "map" / "a.png", p0.map)
    w, s, e, n = xyz.tile_bounds(15, 26971, 12416)
    (x0, y0), (x1, y1) = xyz.latlon_to_mercator(s, w), xyz.latlon_to_mercator(n, e)
    geotiff.write_geotiff(root / "sat" / "b.tif", p1.satellite, (x0, y0, x1, y1), 3857)
    os.makedirs(root / "map", exist_ok=True)
    geotiff.write_geotiff(root / "map" / "b.tif", p1.map, (x0, y0, x1, y1), 3857)
    tasks, _ = cnsatmap.list_tasks(root)
    summary = _convert(tasks, tmp_path / "out")
    assert summary["coords"] == {"geotiff": 2}
    recs = _records(tmp_path / "out", "train")
    assert abs(recs["a"].latitude - 39.2) < 1e-5 and abs(recs["a"].longitude - 116.1) < 1e-5
    lat, lon = xyz.tile_centre(15, 26971, 12416)
    assert abs(recs["b"].latitude - lat) < 1e-5 and abs(recs["b"].longitude - lon) < 1e-4
    np.testing.assert_array_equal(example.decode_image(recs["a"].satellite), p0.satellite)  # lossless PNG
    np.testing.assert_array_equal(example.decode_image(recs["b"].map), p1.map)


def test_problems_are_counted_and_listed_never_dropped_silently(tmp_path):
    root = tmp_path / "cn"
    good, flat = _pair(0), np.full((S, S, 3), 240, np.uint8)
    _save(root / "sat" / "ok.png", good.satellite)
    _save(root / "map" / "ok.png", good.map)
    _save(root / "sat" / "flat.png", good.satellite)
    _save(root / "map" / "flat.png", flat)
    _save(root / "sat" / "lonely.png", good.satellite)
    _save(root / "sat" / "small.png", good.satellite)
    _save(root / "map" / "small.png", _pair(0, 24).map)
    _save(root / "sat" / "wide.png", good.satellite)
    _save(root / "map" / "wide.png", np.zeros((S, 2 * S, 3), np.uint8))
    os.makedirs(root / "map", exist_ok=True)
    _save(root / "sat" / "broken.png", good.satellite)
    (root / "map" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    tasks, skips = cnsatmap.list_tasks(root, coords="none")
    summary = _convert(tasks, tmp_path / "out", listing_skips=skips, min_map_std=10)
    assert summary["written"] == {"train": 1}
    assert summary["skipped"] == {"low_map_std": 1, "size_mismatch": 2, "unpaired": 1, "unreadable": 1}
    listed = json.load(open(tmp_path / "out" / common.SUMMARY_FILE))["skipped_items"]
    assert {i["item"].rsplit("/", 1)[-1].split(".")[0] for i in listed} == {"flat", "lonely", "small", "wide",
                                                                             "broken"}
    # With --size both sides are resized, so the 24px map is usable; the 2:1 map is not.
    summary = _convert(tasks, tmp_path / "out2", size=16)
    assert summary["skipped"] == {"size_mismatch": 1, "unreadable": 1}
    assert all(r.height == 16 for r in _records(tmp_path / "out2", "train").values())


def test_pix2pix_side_by_side(tmp_path):
    root = tmp_path / "maps"
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            p = _pair(i)
            _save(root / split / f"{i + 1}.png", np.concatenate([p.satellite, p.map], axis=1))
    _save(root / "val" / "9.jpg", np.concatenate([_pair(9).satellite, _pair(9).map], axis=1))
    splits, skips, layout = pix2pix_maps.list_tasks(root)
    assert layout == "side_by_side" and {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 2}
    _convert(splits, tmp_path / "out")
    recs = _records(tmp_path / "out", "train")
    np.testing.assert_array_equal(example.decode_image(recs["train/2"].satellite), _pair(1).satellite)
    np.testing.assert_array_equal(example.decode_image(recs["train/2"].map), _pair(1).map)
    assert math.isnan(recs["train/1"].latitude) and recs["train/1"].city == "new_york"
    val = _records(tmp_path / "out", "val")
    assert val["val/9"].satellite_format == "jpeg"  # re-encoded crop keeps the source format
    assert np.abs(example.decode_image(val["val/9"].map).astype(int) - _pair(9).map).mean() < 12  # twice JPEG at 32 px


def test_cyclegan_layout(tmp_path):
    root = tmp_path / "maps"
    for split, ids in (("train", (1, 2)), ("test", (3,))):
        for i in ids:
            _save(root / f"{split}A" / f"{i}_A.jpg", _pair(i).satellite)
            _save(root / f"{split}B" / f"{i}_B.jpg", _pair(i).map)
    _save(root / "trainB" / "7_B.jpg", _pair(7).map)
    splits, skips, layout = pix2pix_maps.list_tasks(root)
    assert layout == "cyclegan" and {k: len(v) for k, v in splits.items()} == {"test": 1, "train": 2}
    assert [s[0] for s in skips] == ["unpaired"]
    _convert(splits, tmp_path / "out", listing_skips=skips)
    rec = _records(tmp_path / "out", "test")["test/3"]
    assert rec.satellite == (root / "testA" / "3_A.jpg").read_bytes() and rec.map_format == "jpeg"


def test_generic_patterns_with_resizing(tmp_path):
    root = tmp_path / "tiles"
    for i, name in enumerate(("0001", "beijing_39.91_116.39")):
        _save(root / f"l_{name}.jpg", _pair(i).satellite)
        _save(root / f"r_{name}.png", _pair(i).map)
    _save(root / "r_orphan.png", _pair(3).map)
    tasks, skips = folders.list_tasks(root, "l_*.jpg", "r_*.png")
    assert [t.tile_id for t in tasks] == ["0001", "beijing_39.91_116.39"] and len(skips) == 1
    assert (tasks[1].lat, tasks[1].lon, tasks[1].city) == (39.91, 116.39, "beijing")
    assert math.isnan(tasks[0].lat)
    _convert(tasks, tmp_path / "out", size=16)
    recs = _records(tmp_path / "out", "train")
    assert example.decode_image(recs["0001"].satellite).shape == (16, 16, 3) and recs["0001"].original_height == S


def test_cli_prepare_folders_and_manifest_args(tmp_path, capsys):
    root = tmp_path / "tiles"
    for i in range(4):
        _save(root / "aerial" / f"{i}.png", _pair(i).satellite)
        _save(root / "osm" / f"{i}.png", _pair(i).map)
    out = tmp_path / "out"
    assert cli_main(["prepare", "folders", str(root), "--sat-pattern", "aerial/*.png", "--map-pattern",
                     "osm/*.png", "--out", str(out), "--size", "16", "--val-fraction", "0.25", "--workers", "1",
                     "--quiet"]) == 0
    assert "written 4 pairs (train 3, val 1)" in capsys.readouterr().out
    m = read_manifest(out, "val")
    assert m["converter"]["name"] == "folders" and m["converter"]["args"]["sat_pattern"] == "aerial/*.png"
    assert cli_main(["prepare", "folders", str(root), "--sat-pattern", "aerial/*.png", "--map-pattern",
                     "osm/*.png", "--out", str(out), "--quiet"]) == 1
    assert "already exist" in capsys.readouterr().err


def test_synthetic_through_the_same_path(tmp_path, capsys):
    out = tmp_path / "syn"
    assert cli_main(["prepare", "synthetic", "--n", "6", "--out", str(out), "--size", "16", "--val-fraction",
                     "0.5", "--workers", "1", "--quiet"]) == 0
    assert {s: read_manifest(out, s)["num_records"] for s in ("train", "val")} == {"train": 3, "val": 3}
    recs = _records(out, "train")
    p = synthetic_city.make_pair(synthetic_city.pair_seed(0, 1), 16)
    np.testing.assert_array_equal(example.decode_image(recs[p.tile_id].satellite), p.satellite)
    np.testing.assert_array_equal(example.decode_image(recs[p.tile_id].map), p.map)
    assert abs(recs[p.tile_id].latitude - p.lat) < 1e-4
    assert cli_main(["inspect", str(out), "--decode", "--quiet"]) == 0
    assert "val: 3 records" in capsys.readouterr().out


def test_parallel_conversion_writes_identical_shards(tmp_path):
    a = syn_prep.prepare(tmp_path / "a", 12, size=16, workers=1, progress=False)
    b = syn_prep.prepare(tmp_path / "b", 12, size=16, workers=2, progress=False)
    assert a["written"] == b["written"]
    sha = lambda d: [s["sha256"] for s in read_manifest(d, "train")["shards"]]  # noqa: E731
    assert sha(tmp_path / "a") == sha(tmp_path / "b")


def test_generic_side_by_side_map_left(tmp_path):
    root = tmp_path / "sbs"
    p = _pair(4)
    _save(root / "a" / "x1.png", np.concatenate([p.map, p.satellite], axis=1))
    tasks, _ = folders.list_tasks(root, "a/*.png", side_by_side="map_left")
    data, source = common.load_pair(tasks[0], common.LoadOptions(image_size=None))
    rec = example.parse(data)
    assert rec.tile_id == "a/x1" and source == "none"
    np.testing.assert_array_equal(example.decode_image(rec.satellite), p.satellite)
    np.testing.assert_array_equal(example.decode_image(rec.map), p.map)


def test_sixteen_bit_and_palette_tiles_are_read_as_images(tmp_path):
    # The converters decode through io.images: 16-bit grey is scaled to 8 bits (not clipped),
    # a palette PNG is looked up. Side by side, so both halves are re-encoded from the pixels.
    root = tmp_path / "sbs"
    os.makedirs(root, exist_ok=True)
    grey16 = (np.arange(S * 2 * S, dtype=np.uint32).reshape(S, 2 * S) * 32).astype(np.uint16)
    Image.fromarray(grey16).save(root / "g16.png")
    p = _pair(5)
    pal = Image.fromarray(np.concatenate([p.satellite, p.map], axis=1)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(root / "pal.png")
    tasks, _ = folders.list_tasks(root, "*.png", side_by_side="sat_left")
    assert _convert(tasks, tmp_path / "out")["written"] == {"train": 2}
    recs = _records(tmp_path / "out", "train")
    want = np.repeat(np.round(grey16 * (255.0 / 65535.0)).astype(np.uint8)[..., None], 3, -1)
    np.testing.assert_array_equal(example.decode_image(recs["g16"].satellite), want[:, :S])
    np.testing.assert_array_equal(example.decode_image(recs["g16"].map), want[:, S:])
    np.testing.assert_array_equal(example.decode_image(recs["pal"].map), np.asarray(pal.convert("RGB"))[:, S:])


def test_converters_install_under_the_package_namespace():
    # data_prep/ is a folder of the repository but the package earthmapper_jax.data_prep; the
    # CLI reaches each converter by import, and setup.cfg lists every package folder.
    assert syn_prep.__name__ == "earthmapper_jax.data_prep.synthetic"
    assert [m.__name__.rsplit(".", 1)[-1] for m in PREPARE_MODULES] == [
        "cnsatmap", "pix2pix_maps", "folders", "synthetic", "prepare_tokens"]
    root = pathlib.Path(__file__).resolve().parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    folders_ = {".".join(p.parent.relative_to(root).parts) for p in (root / "earthmapper_jax").rglob("__init__.py")}
    assert folders_ | {"earthmapper_jax.data_prep"} == listed
    assert "earthmapper_jax.data_prep = data_prep" in cfg["options"]["package_dir"]
    assert not any(p.startswith("data_prep") for p in listed)
