"""Attention masks over a sequence of token scales (block-causal next-scale prediction).

Public API (stable; the EarthMapper joint model builds its layouts with these):

    scale_ids(patch_nums) -> np.ndarray (L,) int32
        The scale index of every token of VAR's sequence (scale si holds pn_si**2 tokens).
    block_causal_mask(q_scale, k_scale=None, *, q_group=None, k_group=None,
                      within_scale="all") -> np.ndarray (Lq, Lk) bool
        True = the query may attend to the key. A query sees every key of a coarser scale and,
        inside its own scale, what `within_scale` allows:
          "all"      every key of the same scale (VAR),
          "group"    only keys of its own group (EarthMapper default: the satellite and the map
                     block of one scale do not see each other),
          "ordered"  keys of its own group and of groups with a smaller group id (the condition
                     half first, the target half attends to it).
        Keys of a finer scale are never visible.
    as_attention_mask(mask) -> jnp bool (1, 1, Lq, Lk), the shape `attention.SelfAttention` takes.
    BlockCausal(q_scale, k_scale=None, q_group=None, k_group=None, within_scale="all")
        The same rule as a description (a pytree of id arrays, which may be traced, e.g. a
        per-batch layout): attention.SelfAttention accepts it wherever it accepts a mask and
        builds the boolean mask inside the compiled program (`.to_mask()` -> (1, 1, Lq, Lk)).

Masks are numpy constants built from static ids, so they fold into the compiled program.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax.numpy as jnp
import numpy as np
from flax import struct

WITHIN_SCALE_CHOICES = ("all", "group", "ordered")


def scale_ids(patch_nums: Sequence[int]) -> np.ndarray:
    """Scale index of every position of the flattened token pyramid, (L,) int32."""
    return np.concatenate([np.full(pn * pn, si, np.int32) for si, pn in enumerate(patch_nums)])


def scale_offsets(patch_nums: Sequence[int]) -> list[tuple[int, int]]:
    """(begin, end) of every scale in the flattened sequence (VAR's `begin_ends`)."""
    out, cur = [], 0
    for pn in patch_nums:
        out.append((cur, cur + pn * pn))
        cur += pn * pn
    return out


def block_causal_mask(
    q_scale,
    k_scale=None,
    *,
    q_group=None,
    k_group=None,
    within_scale: str = "all",
) -> np.ndarray:
    """Boolean (Lq, Lk) mask from per-token scale ids (and optional group ids); see module doc."""
    return _block_causal(np, q_scale, k_scale, q_group, k_group, within_scale)


def _block_causal(xp, q_scale, k_scale, q_group, k_group, within_scale):
    """The rule on the last axis of the id arrays, in numpy (static) or jax.numpy (traced)."""
    q_scale = xp.asarray(q_scale)
    k_scale = q_scale if k_scale is None else xp.asarray(k_scale)
    if within_scale not in WITHIN_SCALE_CHOICES:
        raise ValueError(f"within_scale={within_scale!r}; expected one of {WITHIN_SCALE_CHOICES}")
    coarser = q_scale[..., :, None] > k_scale[..., None, :]
    same = q_scale[..., :, None] == k_scale[..., None, :]
    if within_scale == "all":
        return coarser | same
    if q_group is None:
        raise ValueError(f"within_scale={within_scale!r} needs group ids")
    q_group = xp.asarray(q_group)
    k_group = q_group if k_group is None else xp.asarray(k_group)
    if within_scale == "group":
        ok = q_group[..., :, None] == k_group[..., None, :]
    else:  # "ordered"
        ok = q_group[..., :, None] >= k_group[..., None, :]
    return coarser | (same & ok)


@struct.dataclass
class BlockCausal:
    """Block-causal attention described by per-token ids (see module doc). Ids are (L,) or
    (B, L); the mask is built in-graph."""

    q_scale: Any
    k_scale: Optional[Any] = None
    q_group: Optional[Any] = None
    k_group: Optional[Any] = None
    within_scale: str = struct.field(pytree_node=False, default="all")

    def to_mask(self):
        m = _block_causal(jnp, self.q_scale, self.k_scale, self.q_group, self.k_group,
                          self.within_scale)
        return m[None, None] if m.ndim == 2 else m[:, None]


def var_mask(patch_nums: Sequence[int]) -> np.ndarray:
    """VAR's training mask: (L, L) bool, a token sees its own and all coarser scales."""
    ids = scale_ids(patch_nums)
    return block_causal_mask(ids)


def as_attention_mask(mask) -> jnp.ndarray:
    """(Lq, Lk) bool -> (1, 1, Lq, Lk), broadcastable to (B, H, Lq, Lk)."""
    return jnp.asarray(mask, dtype=bool)[None, None]
