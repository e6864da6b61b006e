"""Pre-tokenised datasets on disk, and the Grain reader the trainer uses.

`earthmapper prepare tokens` (earthmapper_jax/pretokenize.py) encodes a dataset once with the
frozen VQ-VAE and writes, per split:

    OUT/{split}.sat_tokens.npy   uint16 (variants, N, L)   L = Σ pn², scales concatenated
    OUT/{split}.map_tokens.npy   uint16 (variants, N, L)
    OUT/{split}.coords.npy       float32 (N, 2)   (lat, lon), NaN where unknown
    OUT/{split}.tile_ids.npy     str (N,)
    OUT/{split}.sat_sem.npy      float16 (variants, N, g, g, D)  DINOv2 grids (with --si-dinov2)
    OUT/{split}.map_sem.npy      float16 (variants, N, g, g, D)
    OUT/{split}.tokens.json      manifest, written last: a split exists exactly when it does

Each stored *variant* is one flip/rotation of the pipeline's augmentation, (hflip, k): flip
left-right, then rotate by k·90° (why they are stored rather than derived: pretokenize.py).
With `augment=True` the reader draws one stored variant per element; when the manifest says
the tokens commute exactly (`derive_variants`), it moves the identity's tokens instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import grain
import jax
import numpy as np

from earthmapper_jax.errors import DataError
from earthmapper_jax.scales import split_tokens

FORMAT = "earthmapper-tokens"
VERSION = 1
VARIANT_SETS = {
    "none": ((0, 0),),
    "hflip": ((0, 0), (1, 0)),
    "rot90": tuple((0, k) for k in range(4)),
    "dihedral": tuple((h, k) for h in (0, 1) for k in range(4)),
}
_SEED_MOD = 2**32


def transform(x, hflip: int, k: int, axes=(1, 2)):
    """Flip (along axes[1], the width) then rot90 k times in the plane `axes`."""
    if hflip:
        x = np.flip(x, axis=axes[1])
    return np.ascontiguousarray(np.rot90(x, k, axes=axes)) if k else np.ascontiguousarray(x)


def variant_name(hflip: int, k: int) -> str:
    parts = (["hflip"] if hflip else []) + ([f"rot{90 * k}"] if k else [])
    return "+".join(parts) or "identity"


def manifest_path(tokens_dir, split) -> pathlib.Path:
    return pathlib.Path(tokens_dir) / f"{split}.tokens.json"


def read_manifest(tokens_dir, split) -> dict:
    path = manifest_path(tokens_dir, split)
    if not path.exists():
        raise DataError(f"{tokens_dir}: no pre-tokenised split '{split}' ({path.name} missing; "
                        "run `earthmapper prepare tokens`)")
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT or doc.get("version", 0) > VERSION:
        raise DataError(f"{path}: not a version <= {VERSION} {FORMAT} manifest")
    return doc


def existing_split(tokens_dir, split, fallback):
    return split if manifest_path(tokens_dir, split).exists() else fallback


class TokenSource:
    """Random-access source over one split: element i -> all stored variants of pair i."""

    def __init__(self, tokens_dir, split):
        self.dir = str(tokens_dir)
        self.split = split
        self.manifest = read_manifest(tokens_dir, split)
        self.has_sem = bool(self.manifest.get("semantic"))
        self._arrays = None

    def _open(self):
        if self._arrays is None:  # lazily, so the source pickles into Grain workers cheaply
            names = ["sat_tokens", "map_tokens", "coords", "tile_ids"]
            names += ["sat_sem", "map_sem"] if self.has_sem else []
            self._arrays = {n: np.load(os.path.join(self.dir, f"{self.split}.{n}.npy"),
                                       mmap_mode="r") for n in names}
        return self._arrays

    def __len__(self):
        return int(self.manifest["num_records"])

    def __getitem__(self, i):
        a = self._open()
        el = {"sat_tokens": np.asarray(a["sat_tokens"][:, i]),
              "map_tokens": np.asarray(a["map_tokens"][:, i]),
              "coords": np.asarray(a["coords"][i]), "tile_id": str(a["tile_ids"][i])}
        if self.has_sem:
            el["sat_sem"] = np.asarray(a["sat_sem"][:, i])
            el["map_sem"] = np.asarray(a["map_sem"][:, i])
        return el

    def __getstate__(self):
        return dict(self.__dict__, _arrays=None)

    def __repr__(self):
        return f"TokenSource({self.dir!r}, {self.split!r})"


@dataclasses.dataclass(frozen=True)
class ChooseVariant:
    """Grain random_map: one augmentation variant per element (identity without augment)."""

    augment: bool
    variants: tuple
    derive: bool
    patch_nums: tuple

    def __call__(self, el, rng: np.random.Generator):
        out = {"coords": el["coords"], "tile_id": el["tile_id"]}
        if self.derive and self.augment:  # tokens commute exactly: move them
            h, k = VARIANT_SETS["dihedral"][int(rng.integers(8))]
            for key in ("sat_tokens", "map_tokens"):
                maps = split_tokens(el[key][:1], self.patch_nums)  # K maps (1, pn, pn)
                out[key] = np.concatenate(
                    [transform(m, h, k).ravel() for m in maps]).astype(np.int32)
            for key in ("sat_sem", "map_sem"):
                if key in el:
                    out[key] = transform(el[key][0], h, k, axes=(0, 1))
            return out
        v = int(rng.integers(len(self.variants))) if self.augment else 0
        for key in ("sat_tokens", "map_tokens"):
            out[key] = el[key][v].astype(np.int32)
        for key in ("sat_sem", "map_sem"):
            if key in el:
                out[key] = el[key][v].astype(np.float32)
        return out


def token_pipeline(tokens_dir, split, batch_size, *, seed=0, augment=False, num_epochs=None,
                   shuffle=True, process_index=None, process_count=None, read_threads=4):
    """Iterator over numpy batches {sat_tokens, map_tokens (B, L) int32, coords (B, 2),
    tile_id (B,) [, sat_sem, map_sem (B, g, g, D)]} of this host's share of a split.

    Exact global shuffle per epoch, one random stored variant per element when `augment`,
    deterministic for a seed; checkpointable (get_state/set_state, Orbax via Grain)."""
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    source = TokenSource(tokens_dir, split)
    m = source.manifest
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=seed % _SEED_MOD)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    ds = ds.random_map(ChooseVariant(bool(augment), tuple(tuple(v) for v in m["variants"]),
                                     bool(m.get("derive_variants")), tuple(m["patch_nums"])),
                       seed=(seed * 1_000_003 + 29) % _SEED_MOD)
    ds = ds[process_index::process_count]
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                              prefetch_buffer_size=2 * batch_size))
    return iter(it.batch(batch_size, drop_remainder=True))
