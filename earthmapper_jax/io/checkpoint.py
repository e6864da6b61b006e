"""Model directories: `config.json` + an Orbax checkpoint of the params pytree.

This is the format `earthmapper convert ...` writes and `tokenizer.load` / `earthmapper_jax.load`
read (inference artefacts). Training checkpoints (optimizer state, data-iterator state, ...) are
managed by `earthmapper_jax.train.checkpoints`.

    DIR/config.json   {"kind": "tokenizer" | "var" | "earthmapper", "format_version": 1,
                       "config": {...}, "meta": {...}}
    DIR/params/       Orbax StandardCheckpointer directory
    DIR/checksums.json  SHA-256 of the files of params/ (io/model_dir.py), verified on load

Writes are atomic (`io.files.atomic_dir`): everything goes to a sibling staging directory that
is renamed into place.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from earthmapper_jax.errors import CheckpointError, quiet_on_failure
from earthmapper_jax.io import files
from earthmapper_jax.io.model_dir import (CONFIG_FILE, FORMAT_VERSION, PARAMS_DIR, read_config,
                                          verify_checksums, write_checksums)

__all__ = ["CONFIG_FILE", "FORMAT_VERSION", "PARAMS_DIR", "load_params", "read_config",
           "save_params"]


def _to_jsonable(obj):
    if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_params(directory, params, config, *, kind: str, meta: dict | None = None,
                overwrite: bool = False) -> pathlib.Path:
    """Writes `params` (any pytree of arrays) and `config` (dict or ConfigDict) to `directory`."""
    directory = pathlib.Path(directory).absolute()
    params = jax.tree.map(np.asarray, params)
    doc = {"kind": kind, "format_version": FORMAT_VERSION, "config": _to_jsonable(config),
           "meta": _to_jsonable(meta or {})}
    try:
        with files.atomic_dir(directory, overwrite=overwrite) as stage:
            ckptr = ocp.StandardCheckpointer()
            ckptr.save(stage / PARAMS_DIR, params)
            ckptr.wait_until_finished()
            (stage / CONFIG_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True))
            write_checksums(stage)
    except FileExistsError:  # raised by atomic_dir before anything is written
        raise CheckpointError(f"{directory} already exists and is not empty (pass overwrite)") from None
    return directory


def load_params(directory, *, expect_kind: str | None = None, target=None):
    """Returns (params, config_dict) from a directory written by `save_params`.

    `target`: optional pytree of arrays / jax.ShapeDtypeStruct (with shardings) to restore into;
    its structure and shapes must match or a CheckpointError names the first mismatch.
    """
    directory = pathlib.Path(directory).absolute()
    doc = read_config(directory, expect_kind=expect_kind)
    pdir = directory / PARAMS_DIR
    if not pdir.is_dir():
        raise CheckpointError(f"{directory}: params/ missing (incomplete checkpoint)")
    verify_checksums(directory)  # a flipped byte must not load as plausible weights
    ckptr = ocp.StandardCheckpointer()
    try:
        with quiet_on_failure():
            if target is None:
                params = ckptr.restore(pdir)
            else:
                abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
                params = ckptr.restore(pdir, abstract)
    except Exception as e:  # noqa: BLE001 - orbax raises many types; say it in one line
        msg = (str(e).splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointError(f"{directory}: cannot restore params ({msg})") from None
    if target is not None:
        _check_matches(directory, params, target)
    return params, doc["config"]


def _check_matches(directory, params, target):
    """Orbax returns the stored shapes whatever the target says: check them ourselves."""
    got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    want = dict(jax.tree_util.tree_flatten_with_path(target)[0])
    for path in want.keys() - got.keys():
        raise CheckpointError(f"{directory}: parameter {jax.tree_util.keystr(path)} is missing")
    for path in got.keys() - want.keys():
        raise CheckpointError(f"{directory}: unexpected parameter {jax.tree_util.keystr(path)}")
    for path, w in want.items():
        if tuple(got[path].shape) != tuple(w.shape):
            raise CheckpointError(
                f"{directory}: parameter {jax.tree_util.keystr(path)} has shape "
                f"{tuple(got[path].shape)}, expected {tuple(w.shape)} (another architecture?)")
