"""Starting EarthMapper from a converted VAR model directory (`earthmapper convert var`).

    VAR_SHARED                            parameter groups that carry over unchanged
    read_var_init(var_dir, model_config) -> dict
        Reads the VAR directory once (host numpy) and returns the part of an EarthMapper
        parameter tree it provides: the VAR_SHARED groups (blocks, head, word/position/level
        embeddings; position/level embeddings serve both halves) re-laid out for the config's
        scan_layers, and VAR's null-class row as geo/null and as the geo MLP's output bias, so
        every coordinate starts as VAR's unconditional model. The class table is dropped;
        modality embeddings keep their zero init. CheckpointError when the architectures differ.
    apply_var_init(params, part) -> params
        Overwrites those leaves of (fresh) params; pure, so it runs inside a jitted init with
        `part` as an argument. Leaves may be nn.LogicallyPartitioned boxes (kept as boxes).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.io.checkpoint import load_params
from earthmapper_jax.models import earthmapper as em
from earthmapper_jax.models.blocks import stack_block_params, unstack_block_params

VAR_SHARED = ("word_embed", "pos_start", "pos_1LC", "lvl_embed", "shared_ada_lin", "blocks",
              "head_nm", "head")
_SAME = ("depth", "embed_dim", "num_heads", "vocab_size", "cvae", "attn_l2_norm", "shared_aln")


def read_var_init(var_dir, mc) -> dict:
    """The EarthMapper parameters a VAR directory provides (see module doc)."""
    var_params, var_cfg = load_params(var_dir, expect_kind="var")
    for key in _SAME:
        if key in var_cfg and var_cfg[key] != mc[key]:
            raise CheckpointError(
                f"{var_dir}: VAR {key}={var_cfg[key]} but the EarthMapper config has {mc[key]}")
    if tuple(var_cfg["patch_nums"]) != tuple(mc.patch_nums):
        raise CheckpointError(f"{var_dir}: VAR patch_nums {list(var_cfg['patch_nums'])} != "
                              f"the EarthMapper config's {list(mc.patch_nums)}")
    if bool(var_cfg.get("scan_layers", False)) != bool(mc.scan_layers):
        convert = stack_block_params if mc.scan_layers else unstack_block_params
        var_params = convert(var_params, int(mc.depth))
    want = jax.eval_shape(lambda: em.init_params(mc, jax.random.key(0)))
    part = {}
    for key in VAR_SHARED:
        if key not in var_params:
            continue
        if _shapes(var_params[key]) != _shapes(want.get(key)):
            raise CheckpointError(f"{var_dir}: VAR parameter group {key!r} has another layout")
        part[key] = jax.tree.map(np.asarray, var_params[key])
    null = np.asarray(var_params["class_emb"]["embedding"][-1], np.float32)
    part["geo"] = {"null": null, "mlp_out": {"bias": null}}
    return part


def _shapes(tree) -> dict:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(np.shape(x)) for path, x in flat}


def apply_var_init(params, part):
    """params with the leaves present in `part` replaced (dtype of params kept)."""
    if isinstance(part, dict):
        return {k: apply_var_init(v, part[k]) if k in part else v for k, v in params.items()}
    if isinstance(params, nn.meta.AxisMetadata):
        return params.replace_boxed(jnp.asarray(part, params.unbox().dtype))
    return jnp.asarray(part, params.dtype)
