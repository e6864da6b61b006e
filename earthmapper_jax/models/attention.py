"""VAR's self-attention in Flax Linen: cosine attention with a per-head learned scale.

Public API (stable; the EarthMapper joint model reuses it):

    SelfAttention(num_heads, attn_l2_norm=True, dtype=jnp.float32, implementation=None,
                  init_std=0.02, proj_init_scale=1.0)
        __call__(x (B, Lq, C), mask=None, cache=None, cache_offset=None, cache_layer=None)
            -> (y (B, Lq, C), cache)

      Parameters (VAR's names, fp32): mat_qkv/kernel (C, 3C) with columns [q | k | v], each
      head-major (H, D); q_bias (C,); v_bias (C,) (the key bias is fixed at zero); scale_mul (H,)
      (only if attn_l2_norm; VAR's scale_mul_1H11, init ln 4); proj/{kernel (C, C), bias (C,)}.
      Logical axes (train/sharding.py maps them to the mesh): mat_qkv ("embed", "qkv"),
      q_bias/v_bias ("qkv",), scale_mul ("heads",), proj ("qkv", "embed") and bias ("embed",).

      attn_l2_norm=True: q and k are L2-normalised over the head dim (in fp32), q is multiplied
      by exp(min(scale_mul, ln 100)), and the softmax scale is 1.
      attn_l2_norm=False: softmax scale 0.25 / sqrt(D), as VAR's SelfAttention.

      implementation: None / "xla" / "cudnn" go to `jax.nn.dot_product_attention`; "auto" is
      "cudnn" on an NVIDIA GPU with bf16/fp16 compute, else "xla_bias"; "einsum" is an explicit fp32
      softmax(q k^T) v (exact parity path, the reference for tests). cuDNN needs bf16/fp16.
      "xla_bias" is "xla" with the boolean mask turned into an additive bias (0 where attended,
      the dtype's lowest finite value elsewhere) before the call: the same probabilities (a
      masked logit's exp underflows to 0 either way) but the backward pass no longer selects
      through the (B, H, Lq, Lk) mask — the bias is a constant, its cotangent is never built
      (issue 18: -0.9 s of 6.3 s attention per VAR-d16 B 2 CPU step).
      The model configs' check_config validates it (InputError); here it is only asserted.

      mask: boolean, True = attend, broadcastable to (B, H, Lq, Lk), or a masks.BlockCausal
      description (built into a boolean mask in-graph; see `masks.py`).
      With a cache, the mask's last axis runs over the whole cache (length L).

      cache: (k, v), each (B, L, H, D), a fixed-size buffer. This call's keys/values are written
      at `cache_offset` with lax.dynamic_update_slice and the queries attend to positions
      [0, cache_offset + Lq). A static (Python int) offset slices the cache statically (no mask
      needed, fewer keys); a traced offset masks keys with arange(L) < offset + Lq.
      With cache_layer (an int, may be traced) the cache is the whole stack's (depth, B, L, H, D)
      and row cache_layer is this layer's (scan over layers carries one buffer, updated in
      place). The updated cache is returned; with cache=None the second result is None.

    init_cache(batch, length, num_heads, head_dim, dtype) -> (k, v) zeros.
    var_trunc_normal(std): PyTorch `trunc_normal_(std=std)` semantics (truncated at absolute
      +-2, not +-2 std), the initialiser VAR uses for every Linear and embedding.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLEMENTATIONS = (None, "auto", "xla", "xla_bias", "cudnn", "einsum")
MAX_LOG_SCALE = math.log(100.0)  # VAR caps the per-head scale at 100
INIT_LOG_SCALE = math.log(4.0)


def var_trunc_normal(std: float):
    """Normal(0, std) truncated at absolute [-2, 2] (PyTorch trunc_normal_ defaults)."""

    def init(key, shape, dtype=jnp.float32):
        bound = 2.0 / std  # in units of std
        if bound > 6.0:
            # the cut lies beyond 6 std (VAR's stds are ~0.01-0.05): a clipped normal differs from
            # the truncated one with probability < 2e-9 and compiles several times faster
            x = jnp.clip(jax.random.normal(key, shape, jnp.float32), -bound, bound)
        else:
            x = jax.random.truncated_normal(key, -bound, bound, shape, jnp.float32)
        return (x * std).astype(dtype)

    return init


def scaled_init(base, scale: float):
    """`base` initialiser multiplied by a constant (VAR's post-init rescaling of some weights)."""

    def init(key, shape, dtype=jnp.float32):
        return base(key, shape, dtype) * scale

    return init


def init_cache(batch: int, length: int, num_heads: int, head_dim: int, dtype=jnp.float32):
    """A zero (k, v) cache of shape (batch, length, num_heads, head_dim) each."""
    shape = (batch, length, num_heads, head_dim)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def _l2_normalize(x, eps=1e-12):
    # F.normalize semantics: x / max(||x||, eps)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


def _use_cache(cache, offset, layer, k, v, mask):
    """Writes this step's k/v into the cache; returns the keys/values/mask to attend over and
    the updated cache. Written with dynamic_update_slice on the whole buffer so XLA updates it
    in place (no copy of the cache per layer and scale)."""
    k_cache, v_cache = cache
    start = 0 if offset is None else offset
    Lq = k.shape[1]
    if layer is None:  # (B, L, H, D)
        L = k_cache.shape[1]
        k_cache = lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, start, 0, 0))
        v_cache = lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, start, 0, 0))
        k_all, v_all = k_cache, v_cache
    else:  # stacked (depth, B, L, H, D), this layer's row selected by a (traced) index
        L = k_cache.shape[2]
        idx = (layer, 0, start, 0, 0)
        k_cache = lax.dynamic_update_slice(k_cache, k[None].astype(k_cache.dtype), idx)
        v_cache = lax.dynamic_update_slice(v_cache, v[None].astype(v_cache.dtype), idx)
        k_all = lax.dynamic_index_in_dim(k_cache, layer, keepdims=False)
        v_all = lax.dynamic_index_in_dim(v_cache, layer, keepdims=False)
    if isinstance(start, int):
        end = start + Lq
        k_all, v_all = k_all[:, :end], v_all[:, :end]
        if mask is not None:
            mask = jnp.asarray(mask)[..., :end]
    else:
        key_ok = (jnp.arange(L) < start + Lq)[None, None, None, :]
        mask = key_ok if mask is None else jnp.logical_and(mask, key_ok)
    return k_all, v_all, mask, (k_cache, v_cache)


def resolve_auto(dtype) -> str:
    """"auto": cuDNN flash attention on NVIDIA GPUs for bf16/fp16 (XLA's attention materialises
    the (B, H, L, L) scores: out of memory at d16+ training shapes), XLA with the mask as an
    additive bias elsewhere (CPU, TPU, fp32): the same numbers as the masked "xla" path, one
    select over the scores fewer in the backward pass (issue 18)."""
    if jax.default_backend() == "gpu" and dtype in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    return "xla_bias"


def attend(q, k, v, *, mask=None, scale: float = 1.0, implementation=None):
    """softmax(scale * q k^T, masked) v with q (B, Lq, H, D), k/v (B, Lk, H, D) -> (B, Lq, H, D)."""
    assert implementation in IMPLEMENTATIONS, implementation  # check_config validated it
    if implementation == "auto":
        implementation = resolve_auto(q.dtype)
    if implementation == "einsum":
        logits = jnp.einsum(
            "bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32,
            precision=lax.Precision.HIGHEST,
        ) * scale
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum(
            "bhqk,bkhd->bqhd", probs, v.astype(jnp.float32), precision=lax.Precision.HIGHEST
        )
        return out.astype(q.dtype)
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        while mask.ndim < 4:
            mask = mask[None]
    if implementation == "xla_bias":
        bias = None
        if mask is not None:
            bias = jnp.where(mask, 0.0, jnp.finfo(q.dtype).min).astype(q.dtype)
        return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, implementation="xla")
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation=implementation)


class SelfAttention(nn.Module):
    """VAR's SelfAttention (see module doc)."""

    num_heads: int
    attn_l2_norm: bool = True
    dtype: Any = jnp.float32
    implementation: Optional[str] = None
    init_std: float = 0.02
    proj_init_scale: float = 1.0

    @nn.compact
    def __call__(self, x, mask=None, cache=None, cache_offset=None, cache_layer=None):
        B, Lq, C = x.shape
        H = self.num_heads
        if hasattr(mask, "to_mask"):  # masks.BlockCausal description
            mask = mask.to_mask()
        D = C // H
        tn = var_trunc_normal(self.init_std)
        qkv = nn.Dense(3 * C, use_bias=False, dtype=self.dtype, name="mat_qkv",
                       kernel_init=nn.with_logical_partitioning(tn, ("embed", "qkv")))(x)
        bias_init = nn.with_logical_partitioning(nn.initializers.zeros, ("qkv",))
        q_bias = self.param("q_bias", bias_init, (C,), jnp.float32)
        v_bias = self.param("v_bias", bias_init, (C,), jnp.float32)
        qkv = qkv.reshape(B, Lq, 3, H, D)
        q = qkv[:, :, 0] + q_bias.reshape(H, D).astype(qkv.dtype)
        k = qkv[:, :, 1]  # zero key bias
        v = qkv[:, :, 2] + v_bias.reshape(H, D).astype(qkv.dtype)

        if self.attn_l2_norm:
            log_scale = self.param(
                "scale_mul",
                nn.with_logical_partitioning(nn.initializers.constant(INIT_LOG_SCALE), ("heads",)),
                (H,), jnp.float32,
            )
            s = jnp.exp(jnp.minimum(log_scale, MAX_LOG_SCALE))
            # normalise in fp32: bf16 norms of 64-d vectors lose the cosine's precision
            q = (_l2_normalize(q.astype(jnp.float32)) * s[:, None]).astype(self.dtype)
            k = _l2_normalize(k.astype(jnp.float32)).astype(self.dtype)
            scale = 1.0
        else:
            scale = 0.25 / math.sqrt(D)
        q, k, v = q.astype(self.dtype), k.astype(self.dtype), v.astype(self.dtype)

        new_cache = None
        if cache is not None:
            k, v, mask, new_cache = _use_cache(cache, cache_offset, cache_layer, k, v, mask)
            k, v = k.astype(self.dtype), v.astype(self.dtype)

        out = attend(q, k, v, mask=mask, scale=scale, implementation=self.implementation)
        out = out.reshape(B, Lq, C)
        y = nn.Dense(
            C, dtype=self.dtype, name="proj",
            kernel_init=nn.with_logical_partitioning(
                scaled_init(tn, self.proj_init_scale), ("qkv", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        )(out)
        return y, new_cache
