"""Scoring a split the paper's way: translate (or read a baseline's outputs), stream the
features and per-image values batch by batch, summarise (`earthmapper evaluate`).

    request = Request(data="data/", split="test", out="EVAL/", checkpoint="run/model",
                      inception_weights="pt_inception-2015-12-05-6726825d.pth",
                      lpips_backbone="alexnet-owt-7be5be79.pth", lpips_weights="alex.pth")
    metrics = evaluate(request)          # also writes EVAL/metrics.json, table.md, samples.png

Per direction the split is read in its stored order in fixed-size batches (the last one
padded, so every network compiles once), sharded over the data axes of a mesh of all devices.
Generated tiles are rounded to 8 bits and written as EVAL/generated/<direction>/<tile>.png;
only then are they scored, so an in-memory score equals the score of the saved files. Each
batch leaves one record, EVAL/records/<direction>/<index>.npz (written atomically after its
PNGs): per-image SSIM/PSNR/RMSE/LPIPS (sat->map) or Inception features (map->sat), and the
extra evaluators' per-image values. `resume=True` skips the batches that have a record, so a
rerun after an interruption gives the same metrics.json (sampling keys are fold_in(seed, batch)).
The real satellite tiles' features are cached per split, tile count, size and Inception file
(CACHE/<split>-<data hash>-inception-<weights hash>.npz).

Extra evaluators (`Extra`, e.g. conditioning measures) plug in as a tuple of imported objects:
per_batch(model, direction, batch) -> {name: (n,) values} is saved in the records, and
summarise(direction, {name: all values}) -> {name: float} (default: means) lands in the
direction's metrics under the evaluator's name.

This module is the one of evaluation/ that sits above models/, sampling/ and train/sharding
(it loads, samples and shards); the metric modules beside it import only tokenizer/ and the
bottom layer, so the training tasks can use them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import shutil
from typing import Callable, Optional

import jax
import numpy as np

from earthmapper_jax.data.pipeline import dataset
from earthmapper_jax.data.writer import list_splits, read_manifest, split_shards
from earthmapper_jax.errors import DataError, InputError
from earthmapper_jax.evaluation import outputs, pixels, report
from earthmapper_jax.evaluation.accumulators import FeatureSet, distribution_metrics
from earthmapper_jax.evaluation.inception import FEATURE_DIM, inception_features, load_inception
from earthmapper_jax.evaluation.outputs import DIRECTIONS
from earthmapper_jax.io import images
from earthmapper_jax.io.checkpoint import read_config
from earthmapper_jax.io.files import atomic_open, write_json
from earthmapper_jax.models.loading import Model
from earthmapper_jax.models.loading import load as load_model
from earthmapper_jax.progress import progress
from earthmapper_jax.sampling import translate
from earthmapper_jax.tokenizer.lpips import load_lpips
from earthmapper_jax.train import sharding

PAIRED = ("ssim", "psnr", "rmse", "lpips")
GRID_TILES = 8


@dataclasses.dataclass(frozen=True)
class Extra:
    """An extra evaluator (see module doc); `directions` limits where it runs."""

    name: str
    per_batch: Callable
    summarise: Optional[Callable] = None
    directions: tuple = tuple(DIRECTIONS)


# The extra evaluators `earthmapper evaluate` runs (imported objects, no names to look up).
EXTRAS: tuple = ()


@dataclasses.dataclass
class Request:
    """Everything one evaluation needs (the CLI's flags, one to one)."""

    data: str
    split: str
    out: str
    directions: tuple = ("sat2map", "map2sat")
    checkpoint: Optional[str] = None   # an EarthMapper model directory, or
    generated: Optional[str] = None    # a folder of another method's outputs
    seed: int = 0
    batch_size: int = 8
    limit: Optional[int] = None        # the first N tiles of the split
    sampling: dict = dataclasses.field(default_factory=dict)
    inception_weights: Optional[str] = None
    lpips_backbone: Optional[str] = None
    lpips_weights: Optional[str] = None
    lpips_net: str = "alex"
    no_lpips: bool = False
    cache_dir: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    extras: tuple = ()  # Extra objects; `earthmapper evaluate` passes EXTRAS


# ----------------------------------------------------------------------------- checks


def check_split(data, split) -> None:
    """DataError in one line when `split` is not in `data`."""
    if not os.path.isdir(str(data)):
        raise DataError(f"data directory {data} does not exist")
    try:
        split_shards(data, split)
    except DataError:
        have = list_splits(data)
        raise DataError(f"split '{split}' not found in {data}; it has: "
                        f"{', '.join(have) if have else 'no splits'}") from None


def check_checkpoint(path) -> None:
    """InputError in one line unless `path` is an EarthMapper model directory."""
    kind = read_config(path).get("kind")
    if kind != "earthmapper":
        raise InputError(f"--checkpoint {path}: a {kind!r} checkpoint; evaluate needs an "
                         "EarthMapper model directory (WORKDIR/model of a training run)")


def _file_hash(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _data_hash(data, split, size, n) -> str:
    m = read_manifest(data, split)
    ident = json.dumps(m, sort_keys=True) if m is not None else json.dumps(
        [(os.path.basename(p), os.path.getsize(p)) for p in split_shards(data, split)])
    return hashlib.sha256(f"{ident}|{size}|{n}".encode()).hexdigest()[:16]


def _prepare_out(req: Request, settings: dict) -> pathlib.Path:
    out = pathlib.Path(req.out)
    stamp = out / "records" / "settings.json"
    if out.exists() and any(out.iterdir()):
        if req.overwrite:
            for name in ("records", "generated", "metrics.json", "table.md", "samples.png"):
                p = out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        elif not req.resume:
            raise InputError(f"--out {out} exists; pass --resume to continue that evaluation "
                             "or --overwrite to replace it")
        elif stamp.exists() and json.loads(stamp.read_text()) != settings:
            raise InputError(f"--out {out} holds an evaluation with other settings "
                             f"({stamp}); use another --out or --overwrite")
    (out / "records").mkdir(parents=True, exist_ok=True)
    write_json(stamp, settings)
    return out


# ----------------------------------------------------------------------------- the loop


@functools.lru_cache(maxsize=4)
def _sampling_model(model_json: str) -> Model:
    """A weightless Model per architecture: runs in one process (tests, notebooks) share its
    compiled samplers through `with_weights`."""
    return Model(json.loads(model_json)["model"], None, None)


def _sampler_of(model: Model) -> Model:
    key = json.dumps({"model": model.config.to_dict(), "tokenizer": dict(model.tokenizer.config)},
                     sort_keys=True, default=list)
    return _sampling_model(key).with_weights(model.params, model.tokenizer)


class _Scorer:
    """The feature networks and per-batch scoring, compiled once per batch shape."""

    def __init__(self, req: Request, directions):
        self.inception = self.lpips = None
        self.info = {}
        if "map2sat" in directions:
            self.inception = load_inception(req.inception_weights)
            self.info["inception"] = {"file": os.path.basename(req.inception_weights),
                                      "sha256": _file_hash(req.inception_weights)}
        if "sat2map" in directions and not req.no_lpips:
            flags = ("--lpips-backbone", "--lpips-weights")
            self.lpips = load_lpips(req.lpips_backbone, req.lpips_weights, req.lpips_net, flags)
            self.info["lpips"] = {"net": req.lpips_net,
                                  "backbone": os.path.basename(req.lpips_backbone),
                                  "weights": os.path.basename(req.lpips_weights)}
        self.net = req.lpips_net

    def paired(self, generated, real) -> dict:
        """Per-image SSIM/PSNR/RMSE(/LPIPS) of (B, S, S, 3) images in [-1, 1]."""
        out = pixels.paired_metrics((generated + 1) / 2, (real + 1) / 2)
        if self.lpips is not None:
            out["lpips"] = pixels.paired_lpips(self.lpips, generated, real, net=self.net)
        return {k: np.asarray(v, np.float64) for k, v in out.items()}

    def features(self, x) -> np.ndarray:
        return np.asarray(inception_features(self.inception, (x + 1) / 2), np.float32)


def _pad(x, b):
    x = np.asarray(x)
    return x if len(x) == b else np.concatenate([x, np.repeat(x[-1:], b - len(x), 0)])


def _generate(req, model, mesh, direction, src, coords, index):
    b = len(src)
    x = jax.make_array_from_process_local_data(sharding.batch_sharding(mesh, 4), src)
    key = jax.random.fold_in(jax.random.key(req.seed), index)
    _, gen = translate(model, x, direction, key, coords=coords, **req.sampling)
    return np.asarray(gen)[:b]


def _run_direction(req, out, direction, model, scorer, mesh, ds, n, size, real_cache):
    src, tgt = DIRECTIONS[direction]
    rec_dir = out / "records" / direction
    rec_dir.mkdir(parents=True, exist_ok=True)
    b = req.batch_size
    batches = range((n + b - 1) // b)
    need_real = direction == "map2sat" and real_cache is None
    done = {int(p.stem) for p in rec_dir.glob("*.npz")} if req.resume else set()
    with progress(n, desc=f"evaluate {direction}", unit="tile", enabled=req.progress,
                  initial=min(n, len(done) * b)) as bar:
        for i in batches:
            if i in done:
                continue
            items = [ds[j] for j in range(i * b, min(n, (i + 1) * b))]
            k = len(items)
            tile_ids = [str(e["tile_id"]) for e in items]
            source = np.stack([e[f"{src}_image"] for e in items])
            real = np.stack([e[f"{tgt}_image"] for e in items])
            coords = _pad(np.stack([e["coords"] for e in items]), b)
            if req.generated:
                gen = outputs.read_generated(req.generated, direction, tile_ids, size)
            else:
                gen = _generate(req, model, mesh, direction, _pad(source, b), coords, i)
                gen8 = images.to_uint8(gen)
                for t, px in zip(tile_ids, gen8):
                    images.write_image(outputs.generated_path(out, direction, t), px)
                gen = images.to_float(gen8)  # scored as the saved files read back
            record = {"tile_id": np.asarray(tile_ids)}
            if direction == "sat2map":
                record.update({k_: v[:k] for k_, v in scorer.paired(_pad(gen, b), _pad(real, b)).items()})
            else:
                record["features"] = scorer.features(_pad(gen, b))[:k]
                if need_real:
                    record["real_features"] = scorer.features(_pad(real, b))[:k]
            batch = {"source": source, "target": real, "generated": gen, "coords": coords[:k],
                     "tile_id": tile_ids}
            for extra in req.extras:
                if direction in extra.directions:
                    for name, v in extra.per_batch(model, direction, batch).items():
                        record[f"extra/{extra.name}/{name}"] = np.asarray(v)
            with atomic_open(rec_dir / f"{i:06d}.npz", "wb") as f:
                np.savez(f, **record)
            bar.update(k)
    return _summarise(req, rec_dir, direction, len(batches), real_cache)


def _load_records(rec_dir, count) -> dict:
    cols = {}
    for i in range(count):
        with np.load(rec_dir / f"{i:06d}.npz") as z:
            for key in z.files:
                cols.setdefault(key, []).append(z[key])
    return {k: np.concatenate(v) for k, v in cols.items()}


def _summarise(req, rec_dir, direction, count, real_cache):
    cols = _load_records(rec_dir, count)
    res = {"split": req.split, "n": int(len(cols["tile_id"]))}
    if direction == "sat2map":
        res.update({k: float(np.mean(cols[k])) for k in PAIRED if k in cols})
    else:
        fake = FeatureSet(FEATURE_DIM)
        fake.update(cols["features"])
        if real_cache is None:
            if "real_features" not in cols:
                raise DataError(f"{rec_dir}: the records hold no real-tile features and the "
                                "feature cache is gone; rerun with --overwrite")
            real_cache = FeatureSet(FEATURE_DIM)
            real_cache.update(cols["real_features"])
        res.update(distribution_metrics(fake, real_cache))
        res["real"] = real_cache
    for extra in req.extras:
        if direction not in extra.directions:
            continue
        prefix = f"extra/{extra.name}/"
        values = {k[len(prefix):]: v for k, v in cols.items() if k.startswith(prefix)}
        if extra.summarise is not None:
            res[extra.name] = extra.summarise(direction, values)
        else:
            res[extra.name] = {k: float(np.mean(v)) for k, v in values.items()}
    return res


def evaluate(req: Request, model=None) -> dict:
    """Runs the evaluation of `req` (see module doc); `model`: an already loaded checkpoint."""
    for d in req.directions:
        if d not in DIRECTIONS:
            raise InputError(f"--direction {d!r}: expected sat2map, map2sat or both")
    if req.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {req.batch_size}")
    if req.limit is not None and req.limit < 1:
        raise InputError(f"--limit must be >= 1, got {req.limit}")
    if bool(req.generated) == bool(req.checkpoint or model is not None):
        raise InputError("give one of --checkpoint (translate the split) or --generated "
                         "(score another method's outputs)")
    if req.generated and not os.path.isdir(req.generated):
        raise InputError(f"--generated {req.generated}: no such folder")
    check_split(req.data, req.split)
    if model is None and req.checkpoint:
        check_checkpoint(req.checkpoint)
    scorer = _Scorer(req, req.directions)  # missing weights fail here, before any translation
    if model is None and req.checkpoint:
        model = load_model(req.checkpoint)
    method = (f"{req.generated} (--generated)" if model is None
              else str(req.checkpoint or model.directory or "model"))
    if model is not None:  # the model's own sampling settings, then the caller's
        base = model.config.get("sampling", None)
        req.sampling = {**(base.to_dict() if hasattr(base, "to_dict") else dict(base or {})),
                        **req.sampling}
        model = _sampler_of(model)
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    dp = sharding.data_parallel_size(mesh)
    req.batch_size = -(-req.batch_size // dp) * dp  # whole batches per device
    size = model.tokenizer.image_size if model is not None else None
    ds = dataset(req.data, req.split, image_size=size, augment=False, num_epochs=1, shuffle=False,
                 process_index=0, process_count=1)
    n = len(ds) if req.limit is None else min(req.limit, len(ds))
    if size is None:
        size = int(ds[0]["sat_image"].shape[0])
    settings = {"method": method, "data": str(req.data), "split": req.split, "n": n, "size": size,
                "seed": req.seed, "batch_size": req.batch_size, "directions": list(req.directions),
                "sampling": {k: v for k, v in sorted(req.sampling.items())},
                "features": scorer.info, "extras": [e.name for e in req.extras]}
    out = _prepare_out(req, json.loads(json.dumps(settings, default=str)))
    metrics = dict(settings)
    cache = None
    if "map2sat" in req.directions:
        cache_dir = pathlib.Path(req.cache_dir) if req.cache_dir else out / "cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = cache_dir / (f"{req.split}-{_data_hash(req.data, req.split, size, n)}-inception-"
                             f"{scorer.info['inception']['sha256']}.npz")
    for d in req.directions:
        real = FeatureSet.load(cache) if d == "map2sat" and cache.exists() else None
        res = _run_direction(req, out, d, model, scorer, mesh, ds, n, size, real)
        if "real" in res:
            real_set = res.pop("real")
            if real is None:
                real_set.save(cache)
            res["real_cache"] = str(cache)
        metrics[d] = res
    rows = [r for d in req.directions
            for r in outputs.sample_rows(ds, d, GRID_TILES, size, out, req.generated)]
    images.write_grid(out / "samples.png", rows)
    write_json(out / "metrics.json", metrics)
    report.write_table(out / "table.md", metrics)
    return metrics
