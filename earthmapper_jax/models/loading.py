"""`earthmapper_jax.load(dir)`: a converted or trained transformer with its tokenizer, as one object.

Public API (stable; notebooks and tests use these names):

    load(directory, **overrides) -> Model
        directory: written by `earthmapper convert var ...` (kind "var") or by training
        (kind "var" / "earthmapper" / "pix2pix"). overrides replace execution settings of the
        config, e.g. dtype="bfloat16", attention="cudnn", scan_layers=True (the parameter
        layout follows).
        The tokenizer is DIR/tokenizer (exports carry a copy, so a model directory can be
        moved or copied), else the directory named in meta["tokenizer"] (older exports); a
        pix2pix directory is self-contained (no tokenizer).
        Files listed in DIR/checksums.json are verified first (io/model_dir.py).

    Model
        .config     ConfigDict (model.mode in MODES selects the architecture)
        .params     the parameter pytree (fp32)
        .tokenizer  earthmapper_jax.tokenizer.Tokenizer (None for pix2pix)
        .mode       config.mode
        .module     the Linen module (built from config)
        .logits(cond, indices) -> (B, L, V) fp32 teacher-forced logits
            cond: class labels (B,) in VAR mode (num_classes = the null class); in EarthMapper
            mode whatever that mode defines (coordinates (B, 2) or None).
            indices: list of K int token maps (B, pn, pn) (or (B, pn*pn)), e.g. tokenizer.encode.
        .with_config(**overrides) -> Model   same weights, other execution settings
        .with_weights(params, tokenizer=None) -> Model   same config and compiled functions
            (they take the weights as arguments), other weights
        .cached_jit(key, make)   the one cache of compiled functions: make() builds a jitted
            function once per Model (and its with_weights copies) and key. Elsewhere only pure
            builders (numpy tables, a weightless Model per config) are cached, with
            functools.lru_cache.

    Modes are dispatched through MODES: mode name -> module (var_mode, earthmapper_mode,
    models/pix2pix.py) with `build(config)` (the Linen module) and `logits(model, cond, indices)`.

Model directories written before the EarthMapper modality dropout was renamed say
`cond_drop_rate` in config.json; `load` reads it as `modality_drop_rate`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections

from earthmapper_jax import tokenizer as tokenizer_lib
from earthmapper_jax.errors import CheckpointError, InputError
from earthmapper_jax.io.checkpoint import load_params, read_config
from earthmapper_jax.models import earthmapper_mode, pix2pix, var_mode
from earthmapper_jax.models.blocks import stack_block_params, unstack_block_params
from earthmapper_jax.models.convert_var import TOKENIZER_SUBDIR, check_against_tokenizer

MODES = {"var": var_mode, "earthmapper": earthmapper_mode, "pix2pix": pix2pix}
# Modes whose directory holds the whole model (no tokenizer: Model.tokenizer is None).
SELF_CONTAINED = ("pix2pix",)


def mode_module(mode: str):
    if mode not in MODES:
        raise CheckpointError(f"unknown model mode {mode!r}; expected one of {sorted(MODES)}")
    return MODES[mode]


class Model:
    """A transformer, its config and its tokenizer (see module doc)."""

    def __init__(self, config, params, tokenizer, directory=None):
        self.config = ml_collections.ConfigDict(config) if isinstance(config, dict) else config
        self.params = params
        self.tokenizer = tokenizer
        self.directory = directory
        self._module = None
        self._jit_cache: dict[Any, Any] = {}

    @property
    def mode(self) -> str:
        return self.config.get("mode", "var")

    @property
    def module(self):
        if self._module is None:
            self._module = mode_module(self.mode).build(self.config)
        return self._module

    def cached_jit(self, key, make):
        """A compiled function cached on this model under `key` (make() builds the jitted fn)."""
        fn = self._jit_cache.get(key)
        if fn is None:
            fn = self._jit_cache[key] = make()
        return fn

    def logits(self, cond, indices):
        """Teacher-forced logits (B, L, V), fp32 (see module doc)."""
        return mode_module(self.mode).logits(self, cond, indices)

    def with_config(self, **overrides) -> "Model":
        config, params = apply_overrides(self.config, self.params, overrides)
        return Model(config, params, self.tokenizer, self.directory)

    def with_weights(self, params, tokenizer=None) -> "Model":
        out = Model(self.config, params, tokenizer if tokenizer is not None else self.tokenizer,
                    self.directory)
        out._module, out._jit_cache = self._module, self._jit_cache
        return out

    def __repr__(self):
        c = self.config
        return (f"Model(mode={self.mode!r}, depth={c.get('depth')}, width={c.get('embed_dim')}, "
                f"dtype={c.get('dtype')!r}, dir={str(self.directory)!r})")


def apply_overrides(config, params, overrides):
    """Config with execution overrides; params re-laid out if scan_layers changes."""
    config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict") else dict(config))
    before = bool(config.get("scan_layers", False))
    for k, v in overrides.items():
        if k not in config:
            raise InputError(f"unknown model setting {k!r}; expected one of {sorted(config.keys())}")
        config[k] = v
    after = bool(config.get("scan_layers", False))
    if before != after:
        params = (stack_block_params if after else unstack_block_params)(params, int(config.depth))
    return config, params


def _load_tokenizer(directory: pathlib.Path, meta: dict):
    tdir = directory / TOKENIZER_SUBDIR
    if not tdir.is_dir():
        ref = meta.get("tokenizer")
        if not ref:
            raise CheckpointError(
                f"{directory}: no tokenizer/ inside and no tokenizer reference in config.json")
        tdir = pathlib.Path(ref)
        if not tdir.is_absolute():
            tdir = directory / tdir
        if not tdir.is_dir():  # an export from before models carried their tokenizer
            raise CheckpointError(
                f"{directory}: its tokenizer {tdir} (named in config.json) is gone; copy that "
                f"tokenizer directory to {directory / TOKENIZER_SUBDIR}")
    return tokenizer_lib.load(tdir)


def load(directory, **overrides) -> Model:
    """Loads a model directory (see module doc)."""
    directory = pathlib.Path(directory)
    doc = read_config(directory)
    kind = doc.get("kind")
    if kind not in MODES:
        raise CheckpointError(
            f"{directory}: holds a {kind!r} checkpoint, expected a transformer ({sorted(MODES)})")
    params, config = load_params(directory)
    config = ml_collections.ConfigDict(config)
    if "mode" not in config:
        config.mode = kind
    if config.mode == "earthmapper" and "cond_drop_rate" in config:  # the name before the rename
        old = config.cond_drop_rate
        del config["cond_drop_rate"]
        if "modality_drop_rate" not in config:
            config.modality_drop_rate = old
    if "patch_nums" in config:
        config.patch_nums = tuple(int(p) for p in config.patch_nums)
    tokenizer = None
    if config.mode not in SELF_CONTAINED:
        tokenizer = _load_tokenizer(directory, doc.get("meta") or {})
        check_against_tokenizer(config, dict(tokenizer.config), str(directory))
    config, params = apply_overrides(config, params, overrides)
    return Model(config, params, tokenizer, directory)
