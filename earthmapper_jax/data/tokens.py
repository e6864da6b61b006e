"""Pre-tokenised datasets: both modalities' token maps, stored once, read by the trainer.

The tokenizer is frozen while EarthMapper trains, so tokenising every step (a third of
PyTorch VAR's step time) is wasted work. `earthmapper prepare tokens --tokenizer DIR DATA OUT`
runs it once per dataset and writes, per split:

    OUT/{split}.sat_tokens.npy   uint16 (variants, N, L)   L = Σ pn², scales concatenated
    OUT/{split}.map_tokens.npy   uint16 (variants, N, L)
    OUT/{split}.coords.npy       float32 (N, 2)   (lat, lon), NaN where unknown
    OUT/{split}.tile_ids.npy     str (N,)
    OUT/{split}.sat_sem.npy      float16 (variants, N, g, g, D)  DINOv2 grids (with --si-dinov2)
    OUT/{split}.map_sem.npy      float16 (variants, N, g, g, D)
    OUT/{split}.tokens.json      manifest, written last: a split exists exactly when it does

Augmentation. Random crops cannot be pre-tokenised; flips and 90° rotations map the token grid
onto itself, but the tokenizer is not equivariant to them (right/bottom-only conv padding,
learned Phi convs): measured on the synthetic city, flipping the tokens of an image agrees
with tokenising the flipped image on only 2 % (random weights) to 5-14 % (briefly trained)
of the positions. So each augmentation *variant* is tokenised and stored ("dihedral": the
8 flips/rotations of the pipeline's hflip+rot90 augmentation); with `augment=True` the
reader draws one stored variant per element. `variants="auto"` measures the agreement on
the first batch and stores only the identity (deriving variants by moving tokens) if, and
only if, it is exact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile

import grain
import numpy as np

from earthmapper_jax.errors import DataError, InputError

FORMAT = "earthmapper-tokens"
VERSION = 1
# (hflip, k): flip left-right, then rotate by k·90° (the image pipeline's augmentation order).
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


def flatten(maps) -> np.ndarray:
    """K token maps (B, pn, pn) -> (B, Σ pn²), scales concatenated, row-major."""
    return np.concatenate([np.asarray(m).reshape(len(m), -1) for m in maps], axis=1)


def unflatten(flat, patch_nums) -> list:
    out, o = [], 0
    for pn in patch_nums:
        out.append(flat[..., o:o + pn * pn].reshape(*flat.shape[:-1], pn, pn))
        o += pn * pn
    return out


def measure_commutation(tok, images, variants=VARIANT_SETS["dihedral"]) -> dict:
    """For each variant: the fraction of token positions where tokenising the transformed images
    equals transforming the images' tokens (overall and per scale)."""
    base = [np.asarray(t) for t in tok.encode(images)]
    out = {}
    for h, k in variants:
        if (h, k) == (0, 0):
            continue
        moved = [transform(t, h, k) for t in base]
        direct = [np.asarray(t) for t in tok.encode(transform(np.asarray(images), h, k))]
        eq = [(a == b) for a, b in zip(moved, direct)]
        out[variant_name(h, k)] = {
            "agreement": float(np.mean(np.concatenate([e.ravel() for e in eq]))),
            "per_scale": [float(e.mean()) for e in eq],
        }
    return out


# ----------------------------------------------------------------------------- writing


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


def check_compatible(tokens_dir, split, model_config) -> dict:
    """DataError unless the stored tokens fit the model (patch_nums, vocabulary)."""
    doc = read_manifest(tokens_dir, split)
    pn = tuple(int(p) for p in model_config.patch_nums)
    if tuple(doc["patch_nums"]) != pn or int(doc["vocab_size"]) != int(model_config.vocab_size):
        raise DataError(
            f"{tokens_dir}: tokens have patch_nums {doc['patch_nums']} and V {doc['vocab_size']}, "
            f"the model expects {list(pn)} and V {model_config.vocab_size}")
    return doc


def _resolve_variants(variants, tok, first_images):
    if variants == "auto":
        comm = measure_commutation(tok, first_images)
        exact = all(v["agreement"] == 1.0 for v in comm.values())
        return (VARIANT_SETS["none"] if exact else VARIANT_SETS["dihedral"]), comm, exact
    if variants not in VARIANT_SETS:
        raise InputError(f"--variants {variants!r}; expected auto or one of {sorted(VARIANT_SETS)}")
    return VARIANT_SETS[variants], measure_commutation(tok, first_images), False


def prepare_tokens(tokenizer_dir, data_dir, out_dir, *, splits=None, variants="auto",
                   batch_size: int = 32, dinov2=None, si_image_size: int = 224,
                   overwrite: bool = False, progress: bool = True) -> dict:
    """Tokenises every split of a TFRecord dataset (see module doc). Returns {split: manifest}.

    dinov2: optional (module, params) to also store Semantic Infusion target grids.
    """
    from tqdm import tqdm

    from earthmapper_jax import tokenizer as tokenizer_lib
    from earthmapper_jax.data import pipeline
    from earthmapper_jax.data.writer import list_splits, read_manifest as data_manifest

    tok = tokenizer_lib.load(tokenizer_dir)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = list(splits) if splits else list_splits(data_dir)
    if not splits:
        raise DataError(f"{data_dir}: no splits (no *.manifest.json); run `earthmapper prepare`")
    sem_fn = None
    if dinov2 is not None:
        import jax

        from earthmapper_jax.models import semantic

        module, dparams = dinov2
        sem_fn = jax.jit(lambda p, x: semantic.dinov2_grid(module, p, x, si_image_size))
    pn = tuple(tok.patch_nums)
    L = sum(p * p for p in pn)
    chosen = comm = exact = None
    results = {}
    for split in splits:
        if manifest_path(out_dir, split).exists() and not overwrite:
            raise InputError(f"{manifest_path(out_dir, split)} exists (pass --overwrite)")
        n = data_manifest(data_dir, split)["num_records"]
        it = pipeline(data_dir, split, batch_size, image_size=tok.image_size, augment=False,
                      shuffle=False, num_epochs=1, drop_remainder=False)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{split}.tokens-tmp-", dir=out_dir))
        try:
            arrays = {}
            done = 0
            bar = tqdm(total=n, desc=f"tokenising {split}", unit="pair", disable=not progress)
            for batch in it:
                b = len(batch["satellite"])
                if chosen is None:
                    chosen, comm, exact = _resolve_variants(variants, tok, batch["satellite"])
                if not arrays:
                    nv = len(chosen)
                    arrays["sat_tokens"] = np.lib.format.open_memmap(
                        tmp / f"{split}.sat_tokens.npy", "w+", np.uint16, (nv, n, L))
                    arrays["map_tokens"] = np.lib.format.open_memmap(
                        tmp / f"{split}.map_tokens.npy", "w+", np.uint16, (nv, n, L))
                    arrays["coords"] = np.lib.format.open_memmap(
                        tmp / f"{split}.coords.npy", "w+", np.float32, (n, 2))
                    ids = []
                for key, mod in (("sat", "satellite"), ("map", "map")):
                    imgs = _pad(np.asarray(batch[mod], np.float32), batch_size)
                    for v, (h, k) in enumerate(chosen):
                        x = transform(imgs, h, k)
                        arrays[f"{key}_tokens"][v, done:done + b] = flatten(tok.encode(x))[:b]
                        if sem_fn is not None:
                            grid = np.asarray(sem_fn(dparams, x))[:b].astype(np.float16)
                            name = f"{key}_sem"
                            if name not in arrays:
                                arrays[name] = np.lib.format.open_memmap(
                                    tmp / f"{split}.{name}.npy", "w+", np.float16,
                                    (len(chosen), n) + grid.shape[1:])
                            arrays[name][v, done:done + b] = grid
                arrays["coords"][done:done + b] = batch["coords"]
                ids.extend(str(t) for t in batch["tile_id"])
                done += b
                bar.update(b)
            bar.close()
            if done != n:
                raise DataError(f"{data_dir}: split '{split}' yielded {done} pairs, manifest says {n}")
            for a in arrays.values():
                a.flush()
            np.save(tmp / f"{split}.tile_ids.npy", np.asarray(ids))
            manifest = {
                "format": FORMAT, "version": VERSION, "split": split, "num_records": n,
                "patch_nums": list(pn), "vocab_size": int(tok.vocab_size),
                "image_size": int(tok.image_size),
                "tokenizer": str(pathlib.Path(tokenizer_dir).absolute()),
                "source": str(pathlib.Path(data_dir).absolute()),
                "variants": [list(v) for v in chosen],
                "variant_names": [variant_name(*v) for v in chosen],
                "derive_variants": bool(exact),
                "commutation": comm,
                "semantic": ({"image_size": si_image_size} if sem_fn is not None else None),
            }
            mp = manifest_path(out_dir, split)
            if mp.exists():
                mp.unlink()  # the split vanishes while its files are swapped, never shows mixed
            del arrays
            for f in tmp.iterdir():
                os.replace(f, out_dir / f.name)
            tmp_manifest = out_dir / f".{split}.tokens.json.tmp"
            tmp_manifest.write_text(json.dumps(manifest, indent=2))
            os.replace(tmp_manifest, mp)
            results[split] = manifest
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def _pad(x, n):
    """Pads a short last batch to `n` rows so the tokenizer's jit sees one shape."""
    if len(x) == n:
        return x
    return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)], axis=0)


# ----------------------------------------------------------------------------- reading


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
                maps = unflatten(el[key][0], self.patch_nums)
                out[key] = np.concatenate(
                    [transform(m, h, k, axes=(0, 1)).ravel() for m in maps]).astype(np.int32)
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
        import jax

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
