"""Sharded, atomic TFRecord writer with a JSON manifest per split.

Layout of a data directory::

    DIR/train-00000-of-00003.tfrecord        shards (closed at `shard_bytes`)
    DIR/train-00000-of-00003.tfrecord.idx    offset index of each shard (random access)
    DIR/train.manifest.json                  counts, shard names, sha256, schema, converter args

Shards are streamed into temporary files (`io.files.temp_sibling`) and renamed when the split
is complete; the manifest is written last, so a split exists exactly when its manifest does.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
from typing import Any

import numpy as np

from earthmapper_jax.data import tfrecord
from earthmapper_jax.data.example import SCHEMA_VERSION
from earthmapper_jax.errors import DataError
from earthmapper_jax.io import files

MANIFEST_SUFFIX = ".manifest.json"
DEFAULT_SHARD_BYTES = 256 << 20


def manifest_path(data_dir, split: str) -> str:
    return os.path.join(str(data_dir), f"{split}{MANIFEST_SUFFIX}")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def to_json(obj) -> str:
    """Manifest / summary text: numpy scalars as numbers, tuples and sets as lists."""
    return json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n"


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


class ShardedWriter:
    """Writes serialised records of one split into size-bounded shards.

    with ShardedWriter(out_dir, "train", converter="synthetic", args={...}) as w:
        for rec in records: w.write(rec)
    # -> shards renamed into place and train.manifest.json written (on success only)
    """

    def __init__(self, out_dir, split: str, *, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 overwrite: bool = False, converter: str = "", args: dict | None = None,
                 extra: dict | None = None):
        if not split or "/" in split or split.startswith("."):
            raise DataError(f"split name must be a plain name like 'train', got {split!r}")
        self.out_dir = str(out_dir)
        self.split = split
        self.shard_bytes = int(shard_bytes)
        self.converter, self.args, self.extra = converter, dict(args or {}), dict(extra or {})
        os.makedirs(self.out_dir, exist_ok=True)
        self._old = _existing_split_files(self.out_dir, split)
        if self._old and not overwrite:
            raise DataError(
                f"split '{split}' already exists in {self.out_dir}; pass --overwrite (overwrite=True) "
                "to replace it"
            )
        self._shards: list[dict[str, Any]] = []
        self._file = None
        self._closed = False
        self.num_records = 0

    # -- writing
    def _open_shard(self):
        k = len(self._shards)
        # Its final name (…-of-N) is known only when the split is complete.
        tmp = str(files.temp_sibling(os.path.join(self.out_dir, f"{self.split}-{k:05d}.tfrecord")))
        self._file = open(tmp, "wb")
        self._shards.append({"tmp": tmp, "num_records": 0, "num_bytes": 0, "offsets": [0],
                             "sha": hashlib.sha256()})

    def write(self, data: bytes) -> None:
        """Appends one serialised Example."""
        if self._closed:
            raise RuntimeError("writer is closed")
        cur = self._shards[-1] if self._shards else None
        if cur is None or (cur["num_records"] and cur["num_bytes"] >= self.shard_bytes):
            if self._file:
                self._file.close()
            self._open_shard()
            cur = self._shards[-1]
        framed = tfrecord.frame(data)
        self._file.write(framed)
        cur["sha"].update(framed)
        cur["num_records"] += 1
        cur["num_bytes"] += len(framed)
        cur["offsets"].append(cur["num_bytes"])
        self.num_records += 1

    # -- finishing
    def close(self) -> dict:
        """Renames shards into place, writes their indexes and the manifest; returns it."""
        if self._closed:
            raise RuntimeError("writer is closed")
        if self._file:
            self._file.close()
            self._file = None
        n = len(self._shards)
        # The split disappears (no manifest) while its shards are swapped, never shows mixed.
        if os.path.exists(manifest_path(self.out_dir, self.split)):
            os.remove(manifest_path(self.out_dir, self.split))
        entries = []
        for k, sh in enumerate(self._shards):
            name = shard_name(self.split, k, n)
            final = os.path.join(self.out_dir, name)
            os.replace(sh["tmp"], final)
            tfrecord.write_index(final + tfrecord.INDEX_SUFFIX, np.asarray(sh["offsets"], np.uint64))
            entries.append({"file": name, "num_records": sh["num_records"], "num_bytes": sh["num_bytes"],
                            "sha256": sh["sha"].hexdigest(), "index": name + tfrecord.INDEX_SUFFIX})
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "format": "tfrecord/tf.train.Example",
            "split": self.split,
            "num_records": self.num_records,
            "num_shards": n,
            "shards": entries,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "converter": {"name": self.converter, "args": self.args},
            **self.extra,
        }
        keep = {e["file"] for e in entries} | {e["index"] for e in entries}
        for path in self._old:  # files of a replaced split that the new one did not reuse
            if os.path.basename(path) not in keep and os.path.exists(path):
                os.remove(path)
        files.write_text(manifest_path(self.out_dir, self.split), to_json(manifest))
        self._closed = True
        return manifest

    def abort(self) -> None:
        """Removes the temporary shards; leaves an existing split untouched."""
        if self._file:
            self._file.close()
            self._file = None
        for sh in self._shards:
            if os.path.exists(sh["tmp"]):
                os.remove(sh["tmp"])
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._closed:
            return False
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def _existing_split_files(out_dir: str, split: str) -> list[str]:
    files = glob.glob(os.path.join(out_dir, f"{split}-?????-of-?????.tfrecord*"))
    mp = manifest_path(out_dir, split)
    return sorted(files + ([mp] if os.path.exists(mp) else []))


def read_manifest(data_dir, split: str) -> dict | None:
    """The split's manifest, or None when there is none."""
    path = manifest_path(data_dir, split)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from None
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise DataError(
            f"{path}: schema version {manifest['schema_version']} is newer than this code's "
            f"{SCHEMA_VERSION}; update earthmapper-jax"
        )
    return manifest


def list_splits(data_dir) -> list[str]:
    """Splits that have a manifest in `data_dir` (sorted)."""
    names = glob.glob(os.path.join(str(data_dir), f"*{MANIFEST_SUFFIX}"))
    return sorted(os.path.basename(n)[: -len(MANIFEST_SUFFIX)] for n in names)


def split_shards(data_dir, split: str) -> list[str]:
    """Shard paths of a split: from its manifest, else any `split-*.tfrecord` (e.g. from TF)."""
    manifest = read_manifest(data_dir, split)
    if manifest is not None:
        paths = [os.path.join(str(data_dir), e["file"]) for e in manifest["shards"]]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise DataError(f"{manifest_path(data_dir, split)} lists {len(missing)} missing shard(s), "
                            f"first {os.path.basename(missing[0])}")
        return paths
    paths = sorted(glob.glob(os.path.join(str(data_dir), f"{split}-*.tfrecord"))
                   + glob.glob(os.path.join(str(data_dir), f"{split}.tfrecord*")))
    paths = [p for p in paths if not p.endswith(tfrecord.INDEX_SUFFIX)]
    if not paths:
        have = list_splits(data_dir)
        raise DataError(
            f"no split '{split}' in {data_dir} (expected {split}{MANIFEST_SUFFIX} or {split}-*.tfrecord"
            + (f"; splits present: {', '.join(have)})" if have else "; the directory has no dataset)")
        )
    return paths
