"""Pre-tokenising a TFRecord dataset: both modalities' token maps, computed once, for training.

The tokenizer is frozen while EarthMapper trains, so tokenising every step (a third of
PyTorch VAR's step time) is wasted work. `earthmapper prepare tokens --tokenizer DIR DATA OUT`
runs it once per dataset; the files it writes, and the reader, are in
earthmapper_jax/data/token_records.py. This module sits above the data layer: it calls the
tokenizer and (for Semantic Infusion targets) DINOv2, which `data/` never imports.

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

import contextlib
import pathlib

import jax
import numpy as np

from earthmapper_jax import progress as progress_lib
from earthmapper_jax import tokenizer as tokenizer_lib
from earthmapper_jax.data import writer
from earthmapper_jax.data.pipeline import pipeline
from earthmapper_jax.data.token_records import (FORMAT, VARIANT_SETS, VERSION, manifest_path,
                                                transform, variant_name)
from earthmapper_jax.errors import DataError, InputError
from earthmapper_jax.io import files
from earthmapper_jax.models import semantic
from earthmapper_jax.scales import flatten_tokens, seq_len
from earthmapper_jax.tokenizer.model import build as build_tokenizer


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
                   si_target: str = "reconstruction", overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Tokenises every split of a TFRecord dataset (see module doc). Returns {split: manifest}.

    dinov2: optional (module, params) to also store Semantic Infusion targets, of kind
    si_target (models/semantic.py): "reconstruction" stores the per-scale rows (Σpn², D) of the
    paper's targets (DINOv2 of the decoded scale-1..k reconstructions), "image" the real
    image's (g, g, D) DINOv2 grid. Both fp16. Sizes per image, modality and variant at 256²
    with ViT-B/14: 680 × 768 × 2 B = 1.04 MB (reconstruction), 16 × 16 × 768 × 2 B = 0.39 MB
    (image); CNSatMap's 185,751 training pairs × 2 modalities × 8 variants: 3.1 TB / 1.2 TB
    (docs/training.md, "Semantic Infusion targets: storage").
    Each array is written under a temporary name and renamed when the split is complete; the
    split's manifest is removed first and written last, so a split never shows mixed files.
    """
    tok = tokenizer_lib.load(tokenizer_dir)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = list(splits) if splits else writer.list_splits(data_dir)
    if not splits:
        raise DataError(f"{data_dir}: no splits (no *.manifest.json); run `earthmapper prepare`")
    sem_fn = None
    pn = tuple(tok.patch_nums)
    if si_target not in semantic.SI_TARGETS:
        raise InputError(f"--si-target {si_target!r}; expected one of {semantic.SI_TARGETS}")
    if dinov2 is not None:
        module, dparams = dinov2
        if si_target == "image":
            sem_fn = jax.jit(lambda p, x, tp: semantic.dinov2_grid(module, p, x, si_image_size))
        else:
            tok_module = build_tokenizer(dict(tok.config))
            sem_fn = jax.jit(lambda p, x, tp: semantic.reconstruction_targets(
                tok_module, tp, tok_module.apply({"params": tp}, x, method="encode"), module, p, pn,
                si_image_size))
    L = seq_len(pn)
    chosen = comm = exact = None
    results = {}
    for split in splits:
        mp = manifest_path(out_dir, split)
        if mp.exists() and not overwrite:
            raise InputError(f"{mp} exists (pass --overwrite)")
        n = writer.read_manifest(data_dir, split)["num_records"]
        it = pipeline(data_dir, split, batch_size, image_size=tok.image_size, augment=False,
                      shuffle=False, num_epochs=1, drop_remainder=False)
        with contextlib.ExitStack() as staged:  # on exit: every array renamed into place

            def stage(name):
                return staged.enter_context(files.atomic_path(out_dir / f"{split}.{name}.npy"))

            arrays = {}
            done = 0
            bar = progress_lib.progress(n, desc=f"tokenising {split}", unit="pair", enabled=progress)
            for batch in it:
                b = len(batch["sat_image"])
                if chosen is None:
                    chosen, comm, exact = _resolve_variants(variants, tok, batch["sat_image"])
                    if exact and sem_fn is not None and si_target == "reconstruction":
                        # per-scale target rows cannot be moved like a grid: store every variant
                        chosen, exact = VARIANT_SETS["dihedral"], False
                if not arrays:
                    nv = len(chosen)
                    for name in ("sat_tokens", "map_tokens"):
                        arrays[name] = np.lib.format.open_memmap(stage(name), "w+", np.uint16,
                                                                 (nv, n, L))
                    arrays["coords"] = np.lib.format.open_memmap(stage("coords"), "w+",
                                                                 np.float32, (n, 2))
                    ids = []
                for key in ("sat", "map"):
                    imgs = _pad(np.asarray(batch[f"{key}_image"], np.float32), batch_size)
                    for v, (h, k) in enumerate(chosen):
                        x = transform(imgs, h, k)
                        flat = np.asarray(flatten_tokens(tok.encode(x)))
                        arrays[f"{key}_tokens"][v, done:done + b] = flat[:b]
                        if sem_fn is not None:
                            grid = np.asarray(sem_fn(dparams, x, tok.params))[:b].astype(np.float16)
                            name = f"{key}_sem"
                            if name not in arrays:
                                arrays[name] = np.lib.format.open_memmap(
                                    stage(name), "w+", np.float16, (len(chosen), n) + grid.shape[1:])
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
            del arrays
            np.save(stage("tile_ids"), np.asarray(ids))
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
                "semantic": ({"image_size": si_image_size, "target": si_target}
                             if sem_fn is not None else None),
            }
            mp.unlink(missing_ok=True)  # the split vanishes while its files are swapped
        files.write_json(mp, manifest)
        results[split] = manifest
    return results


def _pad(x, n):
    """Pads a short last batch to `n` rows so the tokenizer's jit sees one shape."""
    if len(x) == n:
        return x
    return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)], axis=0)
