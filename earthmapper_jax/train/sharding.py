"""Mesh, logical-axis rules and shardings: one code path from 1 CPU to a TPU pod.

The mesh always has the axes ("data", "fsdp", "tensor"); sizes come from `config.mesh`
(-1 = fill with the remaining devices, size-1 axes are harmless).

Sharding is declared where parameters are created: every parameter of the transformer
(models/attention.py, models/blocks.py) and of the tokenizer (tokenizer/vqvae.py, quantizer.py,
discriminator.py) is made with `nn.with_logical_partitioning(init, names)`, so `module.init`
returns `nn.LogicallyPartitioned` boxes carrying logical axis names ("embed", "mlp", ...).
`LOGICAL_AXIS_RULES` below is the one table from logical names to mesh axes (a config may
replace it with `config.sharding_rules`). Activations are named the same way with
`nn.with_logical_constraint` ("act_*" names); that only acts under `jax.set_mesh(mesh)` and
`nn.logical_axis_rules(rules)`, as the trainer runs its steps. A mesh axis is only used on a
dimension it divides.

A parameter without logical names is an error, not a silent fallback: `param_shardings` raises
EarthMapperError listing every parameter of FSDP_MIN_SIZE elements or more that has no names,
and every logical name the rules table does not know (`naming_problems` gives the same list
without raising). Why raise rather than list: a renamed or new parameter without names, or a
misspelt logical name, does not fail anything; it only shows much later as more memory per
device (an OOM on the pod, or a smaller batch than the hardware allows). The check runs in
`abstract_train_state`, before anything compiles, and names the parameter and the one-line fix;
a warning would scroll by in the logs. Smaller unnamed parameters stay replicated (sharding them
saves little), so a bias or norm scale of a test model does not stop a run.

"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from earthmapper_jax.errors import EarthMapperError
from earthmapper_jax.train.optim import path_name

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
    ("adaln", "tensor"),  # the AdaLN modulation vectors (6C or 2C outputs)
    ("heads", "tensor"),
    ("qkv", "tensor"),
    ("kv", None),
    ("head_dim", None),
    ("vocab", "tensor"),
    # Code rows over both axes: the codebook is the tokenizer's only large non-conv parameter and
    # splitting rows (not the code dimension) keeps the nearest-code distances local.
    ("codebook", ("fsdp", "tensor")),
    ("cond", None),
    ("norm", None),
    # Convolutions (tokenizer): shard output channels over fsdp, never the tiny spatial dims.
    ("conv_h", None),
    ("conv_w", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
)

# Parameters smaller than this may go without logical names (they stay replicated: sharding
# them costs more in collectives than it saves in memory); larger ones must have names.
FSDP_MIN_SIZE = 2**14


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


def _is_box(x):
    return isinstance(x, nn.meta.AxisMetadata)


def logical_names(leaf):
    """The logical axis names of one parameter (its box's), or None for a bare array."""
    if isinstance(leaf, nn.LogicallyPartitioned):
        return tuple(leaf.names)
    return None


def spec_for(leaf, mesh, rules=LOGICAL_AXIS_RULES) -> P:
    """PartitionSpec of one (possibly logically boxed, possibly abstract) parameter: its own
    logical names through `rules`; a bare
    leaf without names is FSDP-sharded on its largest divisible dimension (params trees go
    through `param_shardings`, which refuses large unnamed leaves instead)."""
    if isinstance(leaf, nn.Partitioned) and not isinstance(leaf, nn.LogicallyPartitioned):
        return _fit_spec(list(leaf.names), leaf.value.shape, mesh)  # already mesh axis names
    value = leaf.value if _is_box(leaf) else leaf
    shape = np.shape(value)
    names = logical_names(leaf)
    if names is None:
        return _fsdp_fallback(shape, mesh)
    table = _rules_dict(rules)
    return _fit_spec([table.get(n) if n is not None else None for n in names], shape, mesh)


def naming_problems(boxed_params, rules=LOGICAL_AXIS_RULES) -> list:
    """One line per parameter that `param_shardings` refuses: FSDP_MIN_SIZE elements or more
    without logical names, or a logical name `rules` has no entry for."""
    known = set(_rules_dict(rules))
    problems = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(boxed_params, is_leaf=_is_box)[0]:
        name = path_name(path)
        shape = tuple(np.shape(leaf.value if _is_box(leaf) else leaf))
        if isinstance(leaf, nn.Partitioned) and not isinstance(leaf, nn.LogicallyPartitioned):
            continue  # mesh axes given directly
        names = logical_names(leaf)
        if names is None:
            if math.prod(shape) >= FSDP_MIN_SIZE:
                problems.append(f"{name} {shape} has no logical axis names (create it with "
                                "nn.with_logical_partitioning(init, names))")
            continue
        unknown = [n for n in names if n is not None and n not in known]
        if unknown:
            problems.append(f"{name} {shape}: logical axis name(s) {unknown} have no entry in "
                            "the sharding rules (train/sharding.py LOGICAL_AXIS_RULES or "
                            "config.sharding_rules)")
    return problems


def param_shardings(boxed_params, mesh, rules=LOGICAL_AXIS_RULES):
    """NamedSharding tree for a params tree whose leaves may be `nn.LogicallyPartitioned`.

    The result has the structure of the *unboxed* params. Raises EarthMapperError listing
    `naming_problems` (see the module doc for why it raises).
    """
    problems = naming_problems(boxed_params, rules)
    if problems:
        raise EarthMapperError(
            f"{len(problems)} parameter(s) would be silently replicated: " + "; ".join(problems))
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, spec_for(x, mesh, rules)),
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
