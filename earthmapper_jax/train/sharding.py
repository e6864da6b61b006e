"""Mesh, logical-axis rules and shardings: one code path from 1 CPU to a TPU pod.

The mesh always has the axes ("data", "fsdp", "tensor"); sizes come from `config.mesh`
(-1 = fill with the remaining devices, size-1 axes are harmless). A parameter's logical axis
names come from its `nn.with_logical_partitioning` box, else from `PARAM_RULES` (regexes on its
path, for models that do not annotate); `LOGICAL_AXIS_RULES` maps logical names to mesh axes.
A parameter with no names is FSDP-sharded on its largest dimension that the "fsdp" axis
divides, so any model scales. A mesh axis is only used on a dimension it divides.
"""

from __future__ import annotations

import math
import os
import re

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from earthmapper_jax.errors import EarthMapperError

MESH_AXES = ("data", "fsdp", "tensor")
# The batch dimension is split over both data-parallel axes (FSDP is data parallel too).
BATCH_AXES = ("data", "fsdp")

# Logical axis name -> mesh axis (or tuple of axes, or None = replicated). The only place
# where model-side names meet the mesh. Names follow MaxText/lm1b conventions.
LOGICAL_AXIS_RULES = (
    ("batch", BATCH_AXES),
    ("act_batch", BATCH_AXES),
    ("length", None),
    ("act_len", None),
    ("embed", "fsdp"),
    ("act_emb", None),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("qkv", "tensor"),
    ("kv", None),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("codebook", "tensor"),
    ("cond", None),
    ("norm", None),
    # Convolutions (tokenizer): shard output channels over fsdp, never the tiny spatial dims.
    ("conv_h", None),
    ("conv_w", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
)

# Logical names for parameters the model did not annotate, by regex on the '/'-joined path
# (first match wins; names align with the *trailing* dims, so layer-stacked (scanned) params
# get None on their leading layer axis). Covers the VAR/EarthMapper transformer.
PARAM_RULES = (
    (r"(^|/)mat_qkv/kernel$", ("embed", "qkv")),
    (r"(^|/)(q_bias|v_bias)$", ("qkv",)),
    (r"(^|/)attn/proj/kernel$", ("qkv", "embed")),
    (r"(^|/)fc1/kernel$", ("embed", "mlp")),
    (r"(^|/)fc1/bias$", ("mlp",)),
    (r"(^|/)fc2/kernel$", ("mlp", "embed")),
    (r"(^|/)ada_lin/kernel$", ("embed", "mlp")),
    (r"(^|/)ada_lin/bias$", ("mlp",)),
    (r"(^|/)head/kernel$", ("embed", "vocab")),
    (r"(^|/)(cond_token_embed|class_emb)/embedding$", ("vocab", "embed")),
    (r"(^|/)mlp_(in|out)/kernel$", ("mlp", "embed")),
    (r"(^|/)head/bias$", ("vocab",)),
    (r"(^|/)word_embed/kernel$", (None, "embed")),
    (r"(^|/)(pos_1LC|pos_start|lvl_embed/embedding|modality_embed)$", (None, "embed")),
    (r"(^|/)quantize/codebook$", ("codebook", None)),
)

# Parameters smaller than this stay replicated under the FSDP fallback (sharding them costs
# more in collectives than it saves in memory).
FSDP_MIN_SIZE = 2**14


def maybe_initialize_distributed(config) -> None:
    """Starts multi-host JAX (Cloud TPU, Slurm, ...) when the config or env asks for it.

    Must run before anything touches a device. `jax.distributed.initialize()` auto-detects
    TPU pods and Slurm; on a single host it would raise, so it is opt-in.
    """
    want = bool(config.get("distributed", False)) or os.environ.get("EARTHMAPPER_DISTRIBUTED") == "1"
    if want and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def mesh_shape(mesh_config, n_devices: int) -> tuple[int, ...]:
    """Resolves the axis sizes of `mesh_config` (mapping axis -> size, -1 = fill)."""
    if mesh_config is None:
        mesh_config = {"data": -1}
    sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise EarthMapperError(f"mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise EarthMapperError(
                f"mesh {dict(zip(MESH_AXES, sizes))}: {n_devices} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise EarthMapperError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, found {n_devices}")
    return tuple(sizes)


def make_mesh(mesh_config=None, devices=None) -> jax.sharding.Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all) with Auto axes.

    Auto axes = GSPMD style: we annotate params and batches, XLA propagates the rest.
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(mesh_config, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def _rules_dict(rules):
    out = {}
    for name, axes in rules:
        out.setdefault(name, axes)  # first rule wins, as in flax
    return out


def _fit_spec(axes_per_dim, shape, mesh) -> P:
    """Drops mesh axes that are size 1, already used, or do not divide their dimension."""
    used, spec = set(), []
    for dim, axes in zip(shape, axes_per_dim):
        if axes is None:
            spec.append(None)
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        keep, size = [], 1
        for a in axes:
            n = mesh.shape[a]
            if a in used or n == 1 or dim % (size * n):
                continue
            keep.append(a)
            size *= n
        used.update(keep)
        spec.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
    return P(*spec)


def _fsdp_fallback(shape, mesh, min_size=FSDP_MIN_SIZE) -> P:
    n = mesh.shape["fsdp"]
    if n == 1 or math.prod(shape) < min_size:
        return P()
    for d in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if shape[d] % n == 0:
            return P(*[("fsdp" if i == d else None) for i in range(len(shape))])
    return P()


def _logical_from_path(name, ndim, param_rules):
    for pattern, names in param_rules:
        if re.search(pattern, name):
            if len(names) > ndim:
                return None
            return (None,) * (ndim - len(names)) + tuple(names)
    return None


def spec_for(leaf, mesh, rules=LOGICAL_AXIS_RULES, name: str = "",
             param_rules=PARAM_RULES) -> P:
    """PartitionSpec of one (possibly logically boxed, possibly abstract) parameter: its own
    logical names, else the names `param_rules` give its path `name`, else FSDP fallback."""
    if isinstance(leaf, nn.LogicallyPartitioned) or isinstance(leaf, nn.Partitioned):
        names = leaf.names
        value = leaf.value
        if isinstance(leaf, nn.LogicallyPartitioned):
            table = _rules_dict(rules)
            axes = [table.get(n) if n is not None else None for n in names]
        else:  # already mesh axis names
            axes = list(names)
        return _fit_spec(axes, value.shape, mesh)
    shape = np.shape(leaf)
    names = _logical_from_path(name, len(shape), param_rules) if name else None
    if names is not None:
        table = _rules_dict(rules)
        spec = _fit_spec([table.get(n) if n is not None else None for n in names], shape, mesh)
        if any(a is not None for a in spec) or math.prod(shape) < FSDP_MIN_SIZE:
            return spec
    return _fsdp_fallback(shape, mesh)


def _is_box(x):
    return isinstance(x, nn.meta.AxisMetadata)


def param_shardings(boxed_params, mesh, rules=LOGICAL_AXIS_RULES):
    """NamedSharding tree for a params tree whose leaves may be `nn.LogicallyPartitioned`.

    The result has the structure of the *unboxed* params.
    """
    from earthmapper_jax.train.optim import path_name

    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, spec_for(x, mesh, rules, path_name(path))),
        boxed_params, is_leaf=_is_box)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh, ndim: int = 1) -> NamedSharding:
    """Leading (batch) dimension split over the data-parallel axes."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def data_parallel_size(mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def host_batch_to_global(batch, mesh):
    """Turns this process's numpy batch (a dict) into global jax.Arrays split over the batch axes.

    Non-numeric leaves (tile ids as strings/bytes) stay on the host and are dropped here.
    """
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = host_batch_to_global(v, mesh)
        elif isinstance(v, (list, tuple)):
            out[k] = type(v)(_to_global(x, mesh) for x in v)
        else:
            arr = np.asarray(v)
            if arr.dtype.kind in "OSU":
                continue
            out[k] = _to_global(arr, mesh)
    return out


def _to_global(x, mesh):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)


def bytes_per_device(tree) -> dict:
    """Bytes of `tree` (arrays or ShapeDtypeStructs with shardings) held by each device."""
    out = {}
    for leaf in jax.tree.leaves(tree):
        sh = leaf.sharding
        shard_shape = sh.shard_shape(leaf.shape)
        nbytes = math.prod(shard_shape) * np.dtype(leaf.dtype).itemsize
        for d in sh.device_set:
            out[d] = out.get(d, 0) + nbytes
    return out
