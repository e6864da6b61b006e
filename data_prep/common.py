"""The conversion engine shared by all converters: listed pairs -> (parallel) load, check,
filter, resize, encode -> sharded TFRecord splits + a summary of what was written and skipped.

A converter lists `PairTask`s (paths and metadata only) and hands them to `convert`. Loading
happens in worker processes; records are written in list order, so the output does not depend
on the number of workers. Nothing is dropped silently: every skipped tile is counted by reason
and listed in DIR/prepare_summary.json.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import sys
import time
from typing import Callable

import numpy as np
from PIL import Image

from earthmapper_jax import progress as progress_lib
from earthmapper_jax.data import example
from earthmapper_jax.data.writer import DEFAULT_SHARD_BYTES, ShardedWriter, manifest_path, to_json
from earthmapper_jax.data_prep import geotiff
from earthmapper_jax.errors import DataError, InputError
from earthmapper_jax.io import files
from earthmapper_jax.io.images import decode_image, looks_like
from earthmapper_jax.parallel import imap_ordered, worker_pool

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
GEOTIFF_EXTS = (".tif", ".tiff")
SUMMARY_FILE = "prepare_summary.json"


@dataclasses.dataclass(frozen=True)
class PairTask:
    """One pair to convert. `map=None` with `side_by_side` set: both halves of one file."""

    tile_id: str
    satellite: str
    map: str | None = None
    side_by_side: str = ""  # "" | "sat_left" | "map_left"
    lat: float = math.nan
    lon: float = math.nan
    coords_source: str = ""  # "sidecar" | "filename" | "xyz" | "" (GeoTIFF tags tried at load)
    city: str = ""
    split: str = ""  # preset split from the layout/sidecar, '' if none


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    image_size: int | None = 256  # None or 0: keep the source size
    min_map_std: float | None = None  # paper: 10
    encoding: str = "auto"  # auto (source format) | png | jpeg
    jpeg_quality: int = 95
    source: str = ""
    geotiff_coords: bool = True  # read coordinates from GeoTIFF tags when not known


class Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


@dataclasses.dataclass
class _Image:
    array: np.ndarray
    data: bytes | None  # original bytes when they can be stored as they are
    fmt: str  # png | jpeg | other


def _read_image(path: str, want_geo: bool):
    """(_Image, (lat, lon) | None, geo note); Skip('unreadable') when it cannot be decoded."""
    try:
        if path.lower().endswith(GEOTIFF_EXTS):
            arr, centre, why = geotiff.read_geotiff(path)
            return _Image(arr, None, "tiff"), (centre if want_geo else None), why
        with open(path, "rb") as f:
            data = f.read()
        arr = decode_image(data, path)
        fmt = example.sniff_format(data) or "other"
        return _Image(arr, data if fmt in example.IMAGE_FORMATS else None, fmt), None, ""
    except FileNotFoundError:
        raise Skip("unreadable", f"{path}: file not found") from None
    except InputError as e:  # names the file and says why
        raise Skip("unreadable", str(e)) from None
    except Exception as e:  # tifffile raises many types for bad files
        raise Skip("unreadable", f"{path}: {type(e).__name__}: {e}") from None


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BICUBIC))


def _store(img: _Image, arr: np.ndarray, changed: bool, opts: LoadOptions) -> tuple[bytes, str]:
    """Encoded bytes + format to store: the source bytes when untouched and allowed."""
    want = opts.encoding if opts.encoding != "auto" else (img.fmt if img.fmt in example.IMAGE_FORMATS else "png")
    if not changed and img.data is not None and img.fmt == want:
        return img.data, img.fmt
    return example.encode_image(arr, want, opts.jpeg_quality), want


def load_pair(task: PairTask, opts: LoadOptions) -> tuple[bytes, str]:
    """Serialised Example for `task` and where its coordinates came from; raises Skip."""
    lat, lon, coords_source = task.lat, task.lon, task.coords_source
    want_geo = opts.geotiff_coords and not coords_source
    sat, centre, geo_note = _read_image(task.satellite, want_geo)
    if task.map is None:
        # Side by side: split the one file at the middle; both halves are re-encoded.
        h, w = sat.array.shape[:2]
        left, right = sat.array[:, : w // 2], sat.array[:, w // 2: 2 * (w // 2)]
        s_arr, m_arr = (left, right) if task.side_by_side != "map_left" else (right, left)
        sat, mp = _Image(s_arr, None, sat.fmt), _Image(m_arr, None, sat.fmt)
    else:
        mp, centre_m, note_m = _read_image(task.map, want_geo and centre is None)
        centre, geo_note = (centre, geo_note) if centre is not None else (centre_m, geo_note or note_m)
    if centre is not None:
        (lat, lon), coords_source = centre, "geotiff"
    elif want_geo and geo_note and task.satellite.lower().endswith(GEOTIFF_EXTS):
        coords_source = "geotiff_unusable"

    (sh, sw), (mh, mw) = sat.array.shape[:2], mp.array.shape[:2]
    if abs(sh / sw - mh / mw) > 0.01:
        raise Skip("size_mismatch", f"satellite {sw}x{sh} vs map {mw}x{mh}")
    size = opts.image_size or None
    if size is None and (sh, sw) != (mh, mw):
        raise Skip("size_mismatch", f"satellite {sw}x{sh} vs map {mw}x{mh} (give --size to resize both)")
    s_arr, m_arr = sat.array, mp.array
    s_changed = m_changed = task.map is None
    if size is not None and (sh, sw) != (size, size):
        s_arr, s_changed = _resize(s_arr, size), True
    if size is not None and (mh, mw) != (size, size):
        m_arr, m_changed = _resize(m_arr, size), True
    if opts.min_map_std is not None:
        std = float(m_arr.std())
        if std < opts.min_map_std:
            raise Skip("low_map_std", f"map colour std {std:.2f} < {opts.min_map_std}")
    s_bytes, s_fmt = _store(sat, s_arr, s_changed, opts)
    m_bytes, m_fmt = _store(mp, m_arr, m_changed, opts)
    rec = example.PairRecord(
        satellite=s_bytes, map=m_bytes, satellite_format=s_fmt, map_format=m_fmt,
        tile_id=task.tile_id, latitude=lat, longitude=lon, city=task.city, source=opts.source,
        height=s_arr.shape[0], width=s_arr.shape[1], original_height=sh, original_width=sw,
    )
    return example.encode(rec), coords_source or "none"


def _work(item, load_fn: Callable):
    split, task = item
    name = getattr(task, "tile_id", str(task))
    try:
        data, coords_source = load_fn(task)
        return split, name, data, coords_source, None
    except Skip as s:
        return split, name, None, None, (s.reason, s.detail)


def convert(splits: dict[str, list], out_dir, *, load_fn: Callable, converter: str, args: dict,
            workers: int = 1, shard_bytes: int = DEFAULT_SHARD_BYTES, overwrite: bool = False,
            listing_skips=(), extra: dict | None = None, progress: bool = True) -> dict:
    """Writes every split of `splits` ({split: items}) with `load_fn(item) -> (bytes, coords
    source)` run in `workers` processes. `listing_skips`: (reason, item, detail) found while
    listing (e.g. unpaired files). Returns the summary (also written to DIR/prepare_summary.json)."""
    t0 = time.time()
    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if not overwrite:
        existing = [s for s in splits if os.path.exists(manifest_path(out_dir, s))]
        if existing:
            raise DataError(f"split(s) {', '.join(existing)} already exist in {out_dir}; pass --overwrite to replace")
    skipped = collections.Counter()
    skipped_items = []
    for reason, item, detail in listing_skips:
        skipped[reason] += 1
        skipped_items.append({"reason": reason, "item": item, "detail": detail})
    coords = collections.Counter()
    written = {}
    writers = {s: ShardedWriter(out_dir, s, shard_bytes=shard_bytes, overwrite=overwrite,
                                converter=converter, args=args, extra=extra) for s in splits if splits[s]}
    items = [(s, t) for s in writers for t in splits[s]]
    pool_cm = worker_pool(workers)
    pool = pool_cm.__enter__()  # before the progress bar's thread exists (fork safety)
    bar = progress_lib.progress(len(items), desc=f"prepare {converter}", unit="pair", enabled=progress)
    try:
        for split, name, data, csrc, skip in imap_ordered(pool, functools.partial(_work, load_fn=load_fn), items):
            bar.update()
            if skip is not None:
                skipped[skip[0]] += 1
                skipped_items.append({"reason": skip[0], "item": name, "detail": skip[1], "split": split})
                continue
            writers[split].write(data)
            coords[csrc] += 1
        for s, w in writers.items():
            written[s] = w.close()["num_records"]
    except BaseException:
        for w in writers.values():
            if not w._closed:
                w.abort()
        raise
    finally:
        bar.close()
        pool_cm.__exit__(None, None, None)
    summary = {
        "converter": converter, "out_dir": out_dir, "written": written,
        "written_total": sum(written.values()), "skipped": dict(sorted(skipped.items())),
        "skipped_total": sum(skipped.values()), "coords": dict(sorted(coords.items())),
        "seconds": round(time.time() - t0, 2), "args": args, "skipped_items": skipped_items,
    }
    files.write_text(os.path.join(out_dir, SUMMARY_FILE), to_json(summary))
    return summary


def print_summary(summary: dict, max_items: int = 10) -> None:
    """The end-of-run report: written per split, skipped by reason, a few skipped items."""
    w = ", ".join(f"{s} {n}" for s, n in summary["written"].items()) or "nothing"
    print(f"written {summary['written_total']} pairs ({w}) to {summary['out_dir']} in {summary['seconds']} s")
    if summary["coords"]:
        print("coordinates: " + ", ".join(f"{k} {v}" for k, v in summary["coords"].items()))
    if summary["skipped_total"]:
        print(f"skipped {summary['skipped_total']}: "
              + ", ".join(f"{k} {v}" for k, v in summary["skipped"].items()))
        for it in summary["skipped_items"][:max_items]:
            print(f"  {it['reason']}: {it['item']}" + (f" ({it['detail']})" if it["detail"] else ""))
        if summary["skipped_total"] > max_items:
            print(f"  ... full list in {os.path.join(summary['out_dir'], SUMMARY_FILE)}")
    else:
        print("skipped 0")


# ----------------------------------------------------------------------------- CLI helpers


def add_output_args(p, default_size: int | None = 256) -> None:
    p.add_argument("--out", required=True, help="output data directory (TFRecord shards + manifests)")
    p.add_argument("--size", type=int, default=default_size,
                   help=f"store tiles resized to SIZE x SIZE (0 keeps the source size; default {default_size})")
    p.add_argument("--min-map-std", type=float, default=None,
                   help="skip pairs whose map colour std (0-255) is below this (the paper used 10)")
    p.add_argument("--encoding", choices=("auto", "png", "jpeg"), default="auto",
                   help="format of re-encoded images (auto: the source's); untouched images keep their bytes")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (default: all cores)")
    p.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_BYTES / 2**20, help="shard size in MiB")
    p.add_argument("--overwrite", action="store_true", help="replace splits that already exist in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_split_args(p, default_mode: str = "auto") -> None:
    p.add_argument("--split", dest="split_mode", choices=("auto", "preset", "random", "city"), default=default_mode,
                   help="auto: train/val/test folders or sidecar column if present, else random")
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--val-cities", default="", help="comma-separated cities for val (split=city)")
    p.add_argument("--test-cities", default="", help="comma-separated cities for test (split=city)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split assignment")


def add_coord_args(p) -> None:
    p.add_argument("--coords", choices=("auto", "sidecar", "filename", "xyz", "geotiff", "none"), default="auto",
                   help="where lat/lon come from (auto: sidecar, GeoTIFF tags, file name, XYZ path, in that order)")
    p.add_argument("--sidecar", default=None, help="CSV/JSON with per-tile lat/lon (default: ROOT/metadata.csv|json ...)")
    p.add_argument("--name-pattern", default=None,
                   help="regex with groups (?P<lat>..)(?P<lon>..) [(?P<city>..)] searched in the file stem")
    p.add_argument("--xyz-pattern", default=None,
                   help="regex with groups (?P<z>..)(?P<x>..)(?P<y>..) searched in the tile key dir/stem")


def options_from_args(args, source: str) -> LoadOptions:
    return LoadOptions(image_size=args.size or None, min_map_std=args.min_map_std, encoding=args.encoding,
                       jpeg_quality=args.jpeg_quality, source=source,
                       geotiff_coords=getattr(args, "coords", "auto") in ("auto", "geotiff"))


def cli_args_dict(args) -> dict:
    """The converter arguments as recorded in the manifests."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "command", "dataset", "quiet")}


def split_kwargs(args) -> dict:
    cities = lambda s: tuple(c.strip() for c in s.split(",") if c.strip())  # noqa: E731
    return dict(mode=args.split_mode, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                seed=args.seed, val_cities=cities(args.val_cities), test_cities=cities(args.test_cities))


def warn_if_swapped(splits: dict, side_by_side: str = "", sample: int = 8) -> bool:
    """Warns (stderr) when most of the first `sample` satellite tiles look like maps and their
    maps like satellite images (io.images.looks_like): swapped patterns or sides. True if so."""
    tasks = [t for ts in splits.values() for t in ts][:sample]
    swapped = 0
    for t in tasks:
        try:
            sat, _, _ = _read_image(t.satellite, False)
            mp = _read_image(t.map, False)[0].array if t.map else None
        except Skip:
            continue  # the conversion reports unreadable files
        s = sat.array
        if mp is None:
            h, w = s.shape[:2]
            left, right = s[:, : w // 2], s[:, w // 2:]
            s, mp = (left, right) if side_by_side != "map_left" else (right, left)
        swapped += looks_like(s) == "map" and looks_like(mp) == "sat"
    if tasks and swapped * 2 > len(tasks):
        which = ("--side-by-side" if side_by_side else "--sat-pattern / --map-pattern")
        print(f"warning: {swapped} of the first {len(tasks)} pairs look swapped (the satellite "
              f"side looks like a map and the map side like a photograph): check {which}",
              file=sys.stderr, flush=True)
        return True
    return False


def run_tasks(args, splits: dict, converter: str, listing_skips=()) -> dict:
    """Common tail of the pair converters' CLIs: convert, print the summary."""
    opts = options_from_args(args, converter)
    summary = convert(splits, args.out, load_fn=functools.partial(load_pair, opts=opts), converter=converter,
                      args=cli_args_dict(args), workers=args.workers, shard_bytes=int(args.shard_mb * 2**20),
                      overwrite=args.overwrite, listing_skips=listing_skips, progress=not args.quiet,
                      extra={"image_size": opts.image_size})
    print_summary(summary)
    return summary
