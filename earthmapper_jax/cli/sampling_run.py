"""The output machinery of every sampling subcommand (translate, generate, inpaint, outpaint).

    jobs = file_jobs(paths, size, ...) or record_jobs(data, split, size, ...)  # translate, inpaint
    run_jobs(jobs, start, args=args, command=..., options={...})

`start()` loads the model and returns `sample(items, rng) -> [{output key: image}]`; it is
only called when some output is missing, so a rerun over finished outputs loads nothing.
`size()` (the model's tile size) is asked only when an input is loaded, after start().

A Job names its outputs and knows how to load its input. run_jobs
  - skips a job whose outputs all exist (--overwrite redoes them);
  - loads inputs a batch at a time; a job whose input is bad (unreadable, wrong size, bad
    coordinates) fails alone with a one-line reason, the others go on;
  - pads the last batch by repeating its last input, so a run compiles one shape;
  - writes every output atomically (io/files.py) and creates the output folder only when the
    first result is written, with OUT/<command>_options.json (the options used, and each
    output's coordinates and their source) next to it, so Ctrl-C leaves neither a partial file
    nor an empty folder;
  - ends with "done N / skipped N / failed N" on stdout and one line per failure on stderr;
    exit status 1 when something failed.

Per-tile coordinates, first found: --coords (every tile); the --coords-file sidecar entry
(data_prep.coords.Sidecar, as `earthmapper prepare` reads it); GeoTIFF tags
(data_prep.geotiff.read_geotiff); a file name ending _<lat>_<lon> (data_prep.coords
.from_filename); else none (the null coordinate). With --data DIR --split S the records' own
coordinates and tile ids are used.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import pathlib
import re
import sys
from typing import Callable

import numpy as np

from earthmapper_jax.cli.sampling_args import check_latlon, parse_coords
from earthmapper_jax.data_prep import coords as coords_lib
from earthmapper_jax.data_prep.geotiff import read_geotiff
from earthmapper_jax.errors import CheckpointError, EarthMapperError, InputError
from earthmapper_jax.io import files, images
from earthmapper_jax.progress import progress

NO_COORDS = (math.nan, math.nan)


@dataclasses.dataclass
class Job:
    name: str                       # shown in the summary; outputs are named after it
    outputs: dict                   # key -> output path
    load: Callable[[], dict]        # -> {"image": float (S, S, 3), "coords": (2,), ...}
    coords_source: str = ""


def list_images(inputs) -> list[pathlib.Path]:
    """Files as given, folders expanded to their image files (sorted, not recursive)."""
    out = []
    for item in inputs:
        path = pathlib.Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES
                           and not p.name.startswith("."))
            if not found:
                raise InputError(f"{path}: folder has no images ({', '.join(images.IMAGE_SUFFIXES)})")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return out


def load_tile(path, size: int) -> np.ndarray:
    """A square RGB tile of `path` resized to `size`, as floats in [-1, 1] (InputError if not)."""
    return images.to_float(images.read_image(path, size, square=True))


class TileCoords:
    """Resolves each file's coordinates (see module doc)."""

    def __init__(self, coords: str | None, coords_file: str | None):
        self.fixed = parse_coords(coords) if coords else None
        self.sidecar = coords_lib.Sidecar(coords_file) if coords_file else None
        self.name_re = re.compile(coords_lib.DEFAULT_NAME_PATTERN)

    def __call__(self, path: pathlib.Path) -> tuple[tuple[float, float], str]:
        if self.fixed is not None:
            return self.fixed, "--coords"
        if self.sidecar is not None:
            hit = self.sidecar.lookup(path.stem, path.name)
            if hit is not None and not math.isnan(hit["lat"]):
                return check_latlon(hit["lat"], hit["lon"], f"{self.sidecar.path}: {path.name}"), "sidecar"
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                _, centre, _ = read_geotiff(path)
            except (ImportError, OSError, ValueError):
                centre = None
            if centre is not None:
                return check_latlon(centre[0], centre[1], f"{path}: GeoTIFF tags"), "geotiff"
        got = coords_lib.from_filename(path.stem, self.name_re)
        if got is not None:
            return check_latlon(got[0], got[1], f"{path}: file name"), "filename"
        return NO_COORDS, "none"


def file_jobs(paths, size: Callable[[], int], resolver: TileCoords, outputs: Callable[[str], dict],
              extra: Callable[[pathlib.Path], dict] | None = None) -> list[Job]:
    """One job per image file; outputs(stem) -> {key: path}; extra(path) -> more inputs."""
    jobs, seen = [], {}
    for path in paths:
        stem = path.stem if path.stem not in seen else f"{path.stem}_{path.suffix[1:]}"
        seen[path.stem] = True

        def load(path=path):
            latlon, source = resolver(path)
            item = {"image": load_tile(path, size()), "coords": latlon, "coords_source": source}
            if extra is not None:
                item.update(extra(path))
            return item

        jobs.append(Job(str(path), outputs(stem), load))
    return jobs


def record_jobs(data_dir, split: str, size: Callable[[], int], modality: str, outputs: Callable[[str], dict],
                limit: int | None = None) -> list[Job]:
    """One job per record of a prepared split: its `modality` image, its coordinates, outputs
    named after its tile id (the other modality is passed as "other")."""
    from earthmapper_jax.data import example
    from earthmapper_jax.data.pipeline import dataset
    from earthmapper_jax.data.source import TFRecordSource
    from earthmapper_jax.data.writer import split_shards

    source = TFRecordSource(split_shards(data_dir, split))
    if len(source) == 0:
        raise InputError(f"--data {data_dir} --split {split}: the split has no records")
    ds = []  # built on the first load, when the model (and its tile size) is there

    key, other = ("sat_image", "map_image") if modality == "sat" else ("map_image", "sat_image")
    jobs = []
    for i in range(len(source) if limit is None else min(limit, len(source))):
        raw = source[i]
        tile_id = example.parse(raw.data, f"{raw.shard}: record {raw.index}").tile_id or f"{split}_{i:06d}"
        safe = re.sub(r"[^A-Za-z0-9._\-]+", "_", tile_id)

        def load(i=i, tile_id=tile_id):
            if not ds:
                ds.append(dataset(data_dir, split, image_size=size(), shuffle=False, num_epochs=1,
                                  process_index=0, process_count=1))
            el = ds[0][i]
            lat, lon = (float(v) for v in el["coords"])
            if math.isnan(lat) or math.isnan(lon):
                return {"image": el[key], "other": el[other], "coords": NO_COORDS, "coords_source": "none"}
            latlon = check_latlon(lat, lon, f"{data_dir} {split} {tile_id}")
            return {"image": el[key], "other": el[other], "coords": latlon, "coords_source": "record"}

        jobs.append(Job(f"{split}/{tile_id}", outputs(safe), load))
    return jobs


def tile_sources(args):
    """(coordinate resolver, image paths or None for --data) of a sampling command; exactly one
    of image files/folders and --data must be given."""
    if bool(args.inputs) == bool(args.data):
        raise InputError("give image files/folders or --data DIR (--split), not both or neither")
    resolver = TileCoords(args.coords, args.coords_file)
    return resolver, (list_images(args.inputs) if args.inputs else None)


def check_checkpoint(directory, kinds=("earthmapper",)) -> None:
    """Before anything heavy: the directory holds a model of one of `kinds` (one line if not)."""
    from earthmapper_jax.io.checkpoint import read_config

    kind = read_config(directory).get("kind")
    if kind not in kinds:
        raise CheckpointError(f"--checkpoint {directory}: holds a {kind!r} checkpoint; this "
                              f"command needs one of {', '.join(repr(k) for k in kinds)}")


def load_model(checkpoint, kind: str, options: dict):
    """The sampler's options checked (once, before the model is read: the sampler's own check,
    for `kind` = sat2map / map2sat / joint), the compilation cache on, then the model."""
    import earthmapper_jax
    from earthmapper_jax.compile_cache import enable_compilation_cache
    from earthmapper_jax.sampling import earthmapper_sampler

    earthmapper_sampler._options(kind, options)
    enable_compilation_cache()
    return earthmapper_jax.load(checkpoint)


def out_dir(args) -> pathlib.Path:
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    return out


def settings(args, options: dict) -> dict:
    """The command line's settings and the sampler's options, JSON-ready."""
    plain = (str, int, float, bool, list, tuple, type(None))
    got = {k: v for k, v in vars(args).items() if k != "func" and isinstance(v, plain)}
    got.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()})
    return got


def run_jobs(jobs: list[Job], start: Callable, *, args, command: str, options: dict,
             unit: str = "tile") -> int:
    """Runs the jobs with the sampler `start()` returns (see module doc)."""

    out = pathlib.Path(args.out)
    todo = [j for j in jobs if args.overwrite or not all(pathlib.Path(p).exists() for p in j.outputs.values())]
    skipped = len(jobs) - len(todo)
    failed: list[tuple[str, str]] = []
    done = 0
    record = {"command": command, **options, "outputs": _previous_outputs(out / f"{command}_options.json")}
    bs = args.batch_size
    if todo:
        sample = start()
        import jax  # after start(): loading the model has imported it

        rng = jax.random.key(args.seed)
    with progress(len(todo), desc=command, unit=unit) as bar:
        pending = collections.deque(enumerate(todo))
        while pending:
            batch = []
            while pending and len(batch) < bs:
                index, job = pending.popleft()
                try:
                    batch.append((index, job, job.load()))
                except EarthMapperError as e:
                    failed.append((job.name, str(e)))
                    bar.update(1)
            if not batch:
                continue
            items = [b[2] for b in batch]
            items += [items[-1]] * (bs - len(items))  # one compiled shape for the whole run
            try:
                results = sample(items, jax.random.fold_in(rng, batch[0][0]))
            except EarthMapperError as e:
                failed += [(job.name, str(e)) for _, job, _ in batch]
                bar.update(len(batch))
                continue
            for (_, job, item), result in zip(batch, results):
                for key, path in job.outputs.items():
                    images.write_image(path, result[key])
                record["outputs"][pathlib.Path(next(iter(job.outputs.values()))).stem] = {
                    "input": job.name, "coords": [None if math.isnan(v) else round(float(v), 6) for v in item["coords"]],
                    "coords_source": item.get("coords_source", "")}
                done += 1
            files.write_json(out / f"{command}_options.json", record)
            bar.update(len(batch))
    print(f"{command}: done {done} / skipped {skipped} / failed {len(failed)}"
          + (f" -> {out}" if done else ""))
    for name, why in failed:  # the reason usually names the input already
        print(f"  failed: {why}" if name in why else f"  failed: {name}: {why}", file=sys.stderr)
    return 1 if failed else 0


def _previous_outputs(path: pathlib.Path) -> dict:
    """Outputs recorded by an earlier run into the same folder (kept when a rerun skips them)."""
    import json

    try:
        return dict(json.loads(path.read_text()).get("outputs", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def stack(items, key="image") -> np.ndarray:
    return np.stack([np.asarray(it[key], np.float32) for it in items])


def coords_array(items) -> np.ndarray:
    return np.asarray([it["coords"] for it in items], np.float32)
