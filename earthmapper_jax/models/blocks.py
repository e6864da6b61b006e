"""VAR's transformer blocks in Flax Linen: AdaLN self-attention blocks, the block stack, the head.

Public API (stable; the EarthMapper joint model reuses it):

    layer_norm(x, eps=1e-6)       LayerNorm without affine parameters, computed in fp32.

    AdaLNSelfAttn(num_heads, mlp_ratio=4.0, attn_l2_norm=True, shared_aln=False, norm_eps=1e-6,
                  dtype=jnp.float32, implementation=None, init_std=0.02, init_adaln=0.5,
                  init_adaln_gamma=1e-5, depth=1)
        __call__(x (B, L, C), cond, mask=None, cache=None, cache_offset=None, drop_rate=0.0,
                 deterministic=True) -> (x, cache)
      cond: the raw condition (B, D) when shared_aln=False (the block's own SiLU -> ada_lin
      Linear(D, 6C)), or the shared AdaLN output (B, 6, C) when shared_aln=True (the block adds
      its ada_gss (6, C) parameter). The six vectors are, in VAR's order,
      gamma1, gamma2, scale1, scale2, shift1, shift2 and
          x += drop_path(gamma1 * attn(LN(x) * (1 + scale1) + shift1))
          x += drop_path(gamma2 * ffn (LN(x) * (1 + scale2) + shift2))
      FFN: fc1 Linear(C, round(mlp_ratio C)) -> tanh-GELU -> fc2 Linear(., C).
      Parameters: attn/... (see attention.py), ffn/fc1, ffn/fc2, ada_lin/{kernel (D, 6C), bias}
      or ada_gss (6, C). Init is VAR's init_weights (proj and fc2 divided by sqrt(2 depth),
      ada_lin gamma columns times init_adaln_gamma, scale/shift columns times init_adaln).

    BlockStack(depth, num_heads, ..., drop_path_rate=0.0, scan_layers=False, remat="none")
        __call__(x, cond, mask=None, caches=None, cache_offset=None, deterministic=True,
                 capture_layer=None) -> (x, caches, captured)
      `depth` AdaLNSelfAttn blocks, block i with drop-path rate linspace(0, rate, depth)[i].
      scan_layers=False: parameters layer_0 ... layer_{depth-1}.
      scan_layers=True : one nn.scan; parameters under layers/block/..., each with a leading
                         depth axis (convert with `stack_block_params` / `unstack_block_params`).
      remat: "none" | "full" | "dots" | "dots_no_batch" (jax.checkpoint policy of each block).
      caches: see `init_caches(..., stacked=scan_layers)`: a tuple of per-layer (k, v) pairs
      (B, L, H, D) when unrolled, one (k, v) pair (depth, B, L, H, D) when scanned; returned
      updated (in place inside a jit: every write is a dynamic_update_slice).
      capture_layer: i -> `captured` is the hidden state after block i (B, L, C) (Semantic
      Infusion taps it); None -> captured is None.

    AdaLNBeforeHead(init_std, init_adaln)(x, cond (B, D)) -> LN(x) * (1 + scale) + shift, fp32;
      parameters ada_lin/{kernel (D, 2C), bias}, columns [scale | shift].

    init_caches(depth, batch, length, num_heads, head_dim, dtype, stacked=False)
    LogitsHead(features, dtype)(x) -> fp32 logits: Linear(C, V) whose matmul runs in `dtype`
      with fp32 accumulation and output; parameters kernel (C, V), bias (V,).

    stack_block_params(params, depth) / unstack_block_params(params, depth): move between the
      unrolled (layer_i) and scanned (layers/block, leading axis) parameter layouts of any tree
      containing them (plain arrays: unbox first).

Sharding: parameters are created with logical axis names (`nn.with_logical_partitioning`; the
scanned layer axis is None), so `init` returns `nn.LogicallyPartitioned` boxes that
`nn.meta.unbox` turns into VAR's plain tree; block inputs/outputs carry ACT_AXES constraints
(no-ops without a mesh and `nn.logical_axis_rules`). train/sharding.py maps names to the mesh.
Settings (remat, attention) are validated by the models' check_config, only asserted here.
The module is a little over 400 lines: the block, both stack layouts, their KV caches and the
layout converters change together.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.models.attention import SelfAttention, scaled_init, var_trunc_normal

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ACT_AXES = ("act_batch", "act_len", "act_emb")  # the (B, L, C) hidden state between blocks
_ZEROS = nn.initializers.zeros_init()


def _named(init, *names):
    return nn.with_logical_partitioning(init, names)


def layer_norm(x, eps: float = 1e-6):
    """LayerNorm over the last axis without affine parameters (biased variance), in fp32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def _ada_lin_init(std: float, C: int, n_gamma: int, init_adaln: float, init_adaln_gamma: float):
    """VAR's AdaLN linear init: trunc-normal, the first n_gamma*C output columns (the gammas)
    times init_adaln_gamma and the rest times init_adaln."""
    base = var_trunc_normal(std)

    def init(key, shape, dtype=jnp.float32):
        w = base(key, shape, dtype)
        col_scale = jnp.concatenate(
            [jnp.full((n_gamma * C,), init_adaln_gamma), jnp.full((shape[1] - n_gamma * C,), init_adaln)]
        ).astype(dtype)
        return w * col_scale[None, :]

    return init


def _ada_gss_init(C: int, init_adaln: float, init_adaln_gamma: float):
    def init(key, shape, dtype=jnp.float32):
        w = jax.random.normal(key, shape, jnp.float32) / np.sqrt(C)
        row = jnp.array([init_adaln_gamma] * 2 + [init_adaln] * 4, jnp.float32)
        return (w * row[:, None]).astype(dtype)

    return init


def drop_path(x, rate, rng, deterministic: bool):
    """Per-sample stochastic depth (timm semantics): keep with prob 1 - rate, scale by 1/(1-rate).
    `rate` may be traced (scanned layers carry their rate as data)."""
    if deterministic:
        return x
    if isinstance(rate, (int, float)) and rate == 0.0:
        return x
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(rng, keep, shape)
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


class FFN(nn.Module):
    hidden: int
    dtype: Any = jnp.float32
    init_std: float = 0.02
    out_init_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        C = x.shape[-1]
        tn = var_trunc_normal(self.init_std)
        h = nn.Dense(self.hidden, dtype=self.dtype, name="fc1",
                     kernel_init=_named(tn, "embed", "mlp"), bias_init=_named(_ZEROS, "mlp"))(x)
        h = jax.nn.gelu(h, approximate=True)
        return nn.Dense(
            C, dtype=self.dtype, name="fc2",
            kernel_init=_named(scaled_init(tn, self.out_init_scale), "mlp", "embed"),
            bias_init=_named(_ZEROS, "embed"),
        )(h)


class AdaLNSelfAttn(nn.Module):
    """One VAR block (see module doc)."""

    num_heads: int
    mlp_ratio: float = 4.0
    attn_l2_norm: bool = True
    shared_aln: bool = False
    norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    implementation: Optional[str] = None
    init_std: float = 0.02
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    depth: int = 1  # of the whole stack: VAR divides proj/fc2 init by sqrt(2 depth)

    @nn.compact
    def __call__(self, x, cond, mask=None, cache=None, cache_offset=None, drop_rate=0.0,
                 deterministic=True, cache_layer=None):
        C = x.shape[-1]
        x = nn.with_logical_constraint(x, ACT_AXES)
        out_scale = 1.0 / np.sqrt(2 * self.depth)
        if self.shared_aln:
            gss = self.param(
                "ada_gss",
                _named(_ada_gss_init(C, self.init_adaln, self.init_adaln_gamma), None, "embed"),
                (6, C), jnp.float32,
            )
            mod = cond.astype(jnp.float32) + gss  # (B, 6, C)
        else:
            ada_init = _ada_lin_init(self.init_std, C, 2, self.init_adaln, self.init_adaln_gamma)
            mod = nn.Dense(
                6 * C, dtype=self.dtype, name="ada_lin",
                kernel_init=_named(ada_init, "embed", "adaln"), bias_init=_named(_ZEROS, "adaln"),
            )(nn.silu(cond.astype(self.dtype)))
            mod = mod.astype(jnp.float32).reshape(-1, 6, C)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = [mod[:, i, None, :] for i in range(6)]

        h = layer_norm(x, self.norm_eps) * (1.0 + scale1) + shift1
        h, cache = SelfAttention(
            self.num_heads, attn_l2_norm=self.attn_l2_norm, dtype=self.dtype,
            implementation=self.implementation, init_std=self.init_std,
            proj_init_scale=out_scale, name="attn",
        )(h.astype(self.dtype), mask=mask, cache=cache, cache_offset=cache_offset,
          cache_layer=cache_layer)
        rng = None if deterministic else self.make_rng("dropout")
        r1 = r2 = None
        if rng is not None:
            r1, r2 = jax.random.split(rng)
        x = x + drop_path(h.astype(jnp.float32) * gamma1, drop_rate, r1, deterministic).astype(x.dtype)

        h = layer_norm(x, self.norm_eps) * (1.0 + scale2) + shift2
        h = FFN(round(C * self.mlp_ratio), dtype=self.dtype, init_std=self.init_std,
                out_init_scale=out_scale, name="ffn")(h.astype(self.dtype))
        x = x + drop_path(h.astype(jnp.float32) * gamma2, drop_rate, r2, deterministic).astype(x.dtype)
        return nn.with_logical_constraint(x, ACT_AXES), cache


class _ScanBody(nn.Module):
    """Scan adaptor: carry (x, captured, caches), broadcast (cond, mask), per-layer (idx, rate).
    The stacked caches ride in the carry so each layer updates its row in place."""

    block_kwargs: Any
    cache_offset: Any = None
    deterministic: bool = True
    capture_layer: Optional[int] = None
    remat: str = "none"

    @nn.compact
    def __call__(self, carry, cond, mask, layer):
        x, captured, caches = carry
        block_cls = _maybe_remat(AdaLNSelfAttn, self.remat, in_scan=True)
        x, caches = block_cls(**dict(self.block_kwargs), name="block")(
            x, cond, mask, caches, self.cache_offset, layer["rate"], self.deterministic,
            None if caches is None else layer["idx"],
        )
        if self.capture_layer is not None:
            captured = jnp.where(layer["idx"] == self.capture_layer, x, captured)
        return (x, captured, caches), None


def _remat_policy(name: str):
    assert name in REMAT_POLICIES[1:], name  # check_config validated it
    if name == "full":
        return None  # save nothing
    if name == "dots":
        return jax.checkpoint_policies.checkpoint_dots
    return jax.checkpoint_policies.dots_with_no_batch_dims_saveable


def _maybe_remat(cls, remat: str, in_scan: bool):
    if remat == "none":
        return cls
    # args: self, x, cond, mask, cache, cache_offset, drop_rate, deterministic, cache_layer
    return nn.remat(
        cls, policy=_remat_policy(remat), prevent_cse=not in_scan, static_argnums=(5, 7)
    )


class BlockStack(nn.Module):
    """`depth` AdaLNSelfAttn blocks, unrolled or scanned (see module doc)."""

    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    attn_l2_norm: bool = True
    shared_aln: bool = False
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    implementation: Optional[str] = None
    init_std: float = 0.02
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    scan_layers: bool = False
    remat: str = "none"

    def _block_kwargs(self):
        return dict(
            num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, attn_l2_norm=self.attn_l2_norm,
            shared_aln=self.shared_aln, norm_eps=self.norm_eps, dtype=self.dtype,
            implementation=self.implementation, init_std=self.init_std,
            init_adaln=self.init_adaln, init_adaln_gamma=self.init_adaln_gamma, depth=self.depth,
        )

    def drop_rates(self):
        return np.linspace(0.0, self.drop_path_rate, self.depth).astype(np.float32)

    @nn.compact
    def __call__(self, x, cond, mask=None, caches=None, cache_offset=None, deterministic=True,
                 capture_layer=None):
        rates = self.drop_rates()
        given_stacked = caches is not None and _is_stacked(caches)
        if caches is not None and given_stacked != self.scan_layers:
            # the other layout than this stack's: correct, but costs a copy of the caches per
            # call; build them with init_caches(..., stacked=scan_layers) instead
            caches = _restack(caches, self.depth, to_stacked=self.scan_layers)
        x, caches, captured = self._run(x, cond, mask, caches, cache_offset, deterministic,
                                        capture_layer, rates)
        if caches is not None and given_stacked != self.scan_layers:
            caches = _restack(caches, self.depth, to_stacked=given_stacked)
        return x, caches, captured

    def _run(self, x, cond, mask, caches, cache_offset, deterministic, capture_layer, rates):
        captured = None
        if self.scan_layers:
            body = nn.scan(
                _ScanBody,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, 0),
                length=self.depth,  # the layer axis is unsharded: each step needs its whole layer
                metadata_params={nn.PARTITION_NAME: None},
            )
            layer = {"idx": jnp.arange(self.depth, dtype=jnp.int32), "rate": jnp.asarray(rates)}
            init_captured = jnp.zeros_like(x) if capture_layer is not None else None
            (x, captured, new_caches), _ = body(
                block_kwargs=tuple(sorted(self._block_kwargs().items())),
                cache_offset=cache_offset, deterministic=deterministic,
                capture_layer=capture_layer, remat=self.remat, name="layers",
            )((x, init_captured, caches), cond, mask, layer)
            return x, new_caches, captured

        block_cls = _maybe_remat(AdaLNSelfAttn, self.remat, in_scan=False)
        new_caches = []
        for i in range(self.depth):
            cache_i = None if caches is None else caches[i]
            x, cache_i = block_cls(**self._block_kwargs(), name=f"layer_{i}")(
                x, cond, mask, cache_i, cache_offset, float(rates[i]), deterministic
            )
            new_caches.append(cache_i)
            if capture_layer is not None and i == capture_layer:
                captured = x
        return x, (tuple(new_caches) if caches is not None else None), captured


class AdaLNBeforeHead(nn.Module):
    """VAR's head_nm: LN(x) * (1 + scale) + shift with (scale, shift) = Linear(SiLU(cond)); fp32."""

    norm_eps: float = 1e-6
    init_std: float = 0.02
    init_adaln: float = 0.5

    @nn.compact
    def __call__(self, x, cond):
        C = x.shape[-1]
        mod = nn.Dense(
            2 * C, dtype=jnp.float32, name="ada_lin",
            kernel_init=_named(scaled_init(var_trunc_normal(self.init_std), self.init_adaln),
                               "embed", "adaln"),
            bias_init=_named(_ZEROS, "adaln"),
        )(nn.silu(cond.astype(jnp.float32)))
        scale, shift = mod[:, None, :C], mod[:, None, C:]
        return layer_norm(x, self.norm_eps) * (1.0 + scale) + shift


class LogitsHead(nn.Module):
    """Linear(C, V) producing fp32 logits; the matmul runs in `dtype` with fp32 accumulation."""

    features: int
    dtype: Any = jnp.float32
    init_std: float = 0.02
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        kernel = self.param(
            "kernel",
            _named(scaled_init(var_trunc_normal(self.init_std), self.init_scale), "embed", "vocab"),
            (x.shape[-1], self.features), jnp.float32,
        )
        bias = self.param("bias", _named(_ZEROS, "vocab"), (self.features,), jnp.float32)
        y = jax.lax.dot_general(
            x.astype(self.dtype), kernel.astype(self.dtype),
            (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32,
        )
        return y + bias


def _is_stacked(caches) -> bool:
    return hasattr(caches[0], "ndim") and caches[0].ndim == 5


def _restack(caches, depth: int, to_stacked: bool):
    if to_stacked:
        return jnp.stack([c[0] for c in caches]), jnp.stack([c[1] for c in caches])
    return tuple((caches[0][i], caches[1][i]) for i in range(depth))


def init_caches(depth: int, batch: int, length: int, num_heads: int, head_dim: int,
                dtype=jnp.float32, *, stacked: bool = False):
    """Zero KV caches for a BlockStack: stacked=True (scan_layers): (k, v), each
    (depth, batch, length, heads, head_dim); stacked=False (unrolled): a tuple of `depth`
    (k, v) pairs, each (batch, length, heads, head_dim)."""
    if stacked:
        shape = (depth, batch, length, num_heads, head_dim)
        return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)
    shape = (batch, length, num_heads, head_dim)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(depth))


def _find_block_parent(tree, key):
    """Yields every dict in `tree` that holds `key` (the block container)."""
    if isinstance(tree, dict):
        if key in tree:
            yield tree
        for v in tree.values():
            yield from _find_block_parent(v, key)


def _stack(*arrays):
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np.stack(arrays)
    return jnp.stack(arrays)


def stack_block_params(params, depth: int):
    """Unrolled layout (layer_0..layer_{d-1}) -> scanned layout (layers/block/..., leading axis).
    Returns a new tree; every dict holding `layer_0` is converted."""
    params = _to_dict(params)
    for parent in list(_find_block_parent(params, "layer_0")):
        per = [parent.pop(f"layer_{i}") for i in range(depth)]
        parent["layers"] = {"block": jax.tree_util.tree_map(_stack, *per)}
    return params


def unstack_block_params(params, depth: int):
    """Scanned layout -> unrolled layout (the inverse of stack_block_params)."""
    params = _to_dict(params)
    for parent in list(_find_block_parent(params, "layers")):
        stacked = parent.pop("layers")["block"]
        for i in range(depth):
            parent[f"layer_{i}"] = jax.tree_util.tree_map(lambda a, i=i: a[i], stacked)
    return params


def _to_dict(tree):
    """A fresh nested plain-dict copy of a (possibly frozen) params tree (leaves shared)."""
    if hasattr(tree, "unfreeze"):
        tree = tree.unfreeze()
    if isinstance(tree, dict):
        return {k: _to_dict(v) for k, v in tree.items()}
    return tree
