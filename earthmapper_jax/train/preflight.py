"""Checks a training config against the files it names, before any state is built or any
folder is created: a run that cannot work stops in one line, leaving nothing behind.

    check(config) -> list of notes        per config.task (CHECKS); unknown tasks pass through
                                          (the trainer's registry refuses them)

EarthMapper trains on a frozen tokenizer, so the tokenizer's config.json decides what it can:
the image size (config.data.image_size unset = the tokenizer's; set and different = refused),
and, for a transformer trained from scratch, the codebook size, the scales and the latent width
(taken from the tokenizer, with a note). A transformer started from VAR weights
(config.model.var_init) has those fixed by the weights: a tokenizer that differs is refused,
naming both values. Pre-tokenised data (config.data.tokens_dir) must come from the same scales
and codebook. Semantic Infusion needs a source for its DINOv2 targets (the weights, or grids
stored with the tokens).

Imports nothing heavy (no JAX): the command line runs it before loading the trainer.
"""

from __future__ import annotations

import json
import pathlib

from earthmapper_jax.errors import CheckpointError, DataError, InputError
from earthmapper_jax.io.model_dir import read_config

# config.model.var_init sentinels: a config that starts from VAR weights (the paper's) says
# "required" until a directory is given; "none" trains from scratch on purpose.
VAR_INIT_REQUIRED, VAR_INIT_NONE = "required", "none"
VAR_INIT_MISSING = ("config.model.var_init is not set, and this config starts from VAR weights "
                    "(the paper): pass --config.model.var_init=DIR (from `earthmapper convert "
                    "var`), or --config.model.var_init=none to train from scratch")

# (model field, tokenizer field, what it is)
_SHARED_FIELDS = (("vocab_size", "vocab_size", "codebook size"),
                  ("cvae", "z_channels", "latent width"),
                  ("patch_nums", "patch_nums", "scales"))


def _norm(v):
    return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else int(v)


def _show(v):
    return ",".join(str(x) for x in v) if isinstance(v, tuple) else str(v)


def check_earthmapper(config) -> list[str]:
    mc, notes = config.model, []
    var_dir = mc.get("var_init", "") or ""
    if var_dir == VAR_INIT_REQUIRED:  # config only: before any file is read
        raise InputError(VAR_INIT_MISSING)
    tok_dir = mc.get("tokenizer_dir", "") or ""
    if not tok_dir:
        raise InputError("config.model.tokenizer_dir is not set: EarthMapper trains on a frozen "
                         "tokenizer; pass --config.model.tokenizer_dir=DIR (after `make demo`: "
                         "demo_out/tokenizer_run/tokenizer)")
    try:
        tok = read_config(tok_dir, expect_kind="tokenizer")["config"]
    except CheckpointError as e:
        raise CheckpointError(f"--config.model.tokenizer_dir: {e}") from None
    var_dir = "" if var_dir == VAR_INIT_NONE else var_dir
    for mine, theirs, what in _SHARED_FIELDS:
        have, want = _norm(mc[mine]), _norm(tok[theirs])
        if have == want:
            continue
        if var_dir:
            raise InputError(
                f"the tokenizer {tok_dir} has {what} {_show(want)} but the VAR weights of "
                f"config.model.var_init ({var_dir}) need {_show(have)} (config.model.{mine}): "
                "use the tokenizer those weights were trained with")
        mc[mine] = want
        notes.append(f"config.model.{mine} {_show(have)} -> {_show(want)} (the {what} of the "
                     f"tokenizer {tok_dir})")
    size, tok_size = config.data.get("image_size", None), int(tok["image_size"])
    if size is None:
        config.data.image_size = tok_size
    elif int(size) != tok_size:
        raise InputError(
            f"config.data.image_size is {int(size)} px but the tokenizer {tok_dir} works at "
            f"{tok_size} px: drop --config.data.image_size (the tokenizer's size is used) or "
            f"set it to {tok_size}")
    tokens_dir = config.data.get("tokens_dir", None)
    manifest = {}
    if tokens_dir and "://" not in str(tokens_dir):
        manifest = _check_tokens(tokens_dir, config.data.split, tok, tok_dir)
    check_si_sources(config, manifest)
    return notes


def check_si_sources(config, manifest=None) -> None:
    """SI needs DINOv2 weights (config.model.si_dinov2) or targets of its kind
    (config.model.si_target) precomputed in the token shards (`earthmapper prepare tokens
    --si-dinov2`). `manifest`: the token split's manifest when the caller has read it."""
    mc = config["model"]
    if not (int(mc.get("si_layer", 0)) and float(mc.get("si_weight", 0.0)) > 0):
        return
    if mc.get("si_dinov2", None):
        return
    target = mc.get("si_target", "image")
    tokens_dir = config["data"].get("tokens_dir", None) if "data" in config else None
    if tokens_dir and "://" in str(tokens_dir):
        return  # remote shards: their manifest is read by the pipeline, at its start
    stored = (manifest or {}).get("semantic") or {}
    if tokens_dir and stored and stored.get("target", "image") == target:
        return
    where = (f"config.data.tokens_dir={tokens_dir} holds "
             f"{'no SI targets' if not stored else repr(stored.get('target', 'image')) + ' SI targets'}"
             if tokens_dir else "the training data are images")
    raise InputError(
        f"Semantic Infusion is on (config.model.si_weight={mc.si_weight}, si_target={target!r}) but "
        f"config.model.si_dinov2 is not set and {where}: pass --config.model.si_dinov2=PATH "
        f"(an official DINOv2 .pth), precompute the targets with `earthmapper prepare tokens "
        f"--si-dinov2 PATH --si-target {target}`, or turn SI off with --config.model.si_weight=0")


def _check_tokens(tokens_dir, split, tok, tok_dir) -> dict:
    """The pre-tokenised split's manifest ({} if unreadable: the reader names the problem); it
    must list the tokenizer's scales and codebook."""
    path = pathlib.Path(tokens_dir) / f"{split}.tokens.json"  # token_records.manifest_path
    if not pathlib.Path(tokens_dir).is_dir():
        raise DataError(f"--config.data.tokens_dir: {tokens_dir}: no such directory")
    if not path.is_file():
        return {}  # the data reader names what is missing
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    for key, theirs in (("patch_nums", "patch_nums"), ("vocab_size", "vocab_size")):
        if key in doc and _norm(doc[key]) != _norm(tok[theirs]):
            raise DataError(
                f"{path}: tokens with {key} {_show(_norm(doc[key]))}, but the tokenizer "
                f"{tok_dir} has {_show(_norm(tok[theirs]))}: tokenise the data with "
                f"`earthmapper prepare tokens --tokenizer {tok_dir} ...`")
    return doc


# config.cluster's fields that say where the processes meet (train/hosts.py): all or none.
CLUSTER_FIELDS = ("coordinator_address", "num_processes", "process_id")

# config.task -> its check; tasks without one (the tokenizer, test tasks) pass through.
CHECKS = {"earthmapper": check_earthmapper}


def check_cluster(config) -> None:
    """config.cluster (multi-host, train/hosts.maybe_initialize_distributed): set all three
    of coordinator_address, num_processes and process_id, or none; a positive timeout."""
    cluster = config.get("cluster", None)
    if cluster is None:
        return
    timeout = cluster.get("init_timeout_s", 300)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise InputError(f"config.cluster.init_timeout_s={timeout!r}: expected a positive "
                         "number of seconds")
    names = CLUSTER_FIELDS
    given = {k: cluster.get(k, None) for k in names if cluster.get(k, None) is not None}
    if not given:
        return
    if len(given) < len(names):
        missing = ", ".join(f"config.cluster.{k}" for k in names if k not in given)
        raise InputError(f"config.cluster sets {', '.join(sorted(given))} but not {missing}: "
                         "set all three (or none, for TPU pods and Slurm)")
    host, _, port = str(given["coordinator_address"]).rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"config.cluster.coordinator_address={given['coordinator_address']!r}: "
                         "expected host:port (e.g. localhost:12345, the address of process 0)")
    n, i = int(given["num_processes"]), int(given["process_id"])
    if n < 1 or not 0 <= i < n:
        raise InputError(f"config.cluster.process_id={i} with num_processes={n}: expected "
                         f"num_processes >= 1 and 0 <= process_id < num_processes")


def check(config) -> list[str]:
    """Runs the checks every run gets, then the task's own; returns notes to print once
    (values taken from files)."""
    check_cluster(config)
    fn = CHECKS.get(config.get("task", None))
    return fn(config) if fn is not None else []
