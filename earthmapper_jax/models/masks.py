"""Attention masks over a sequence of token scales (block-causal next-scale prediction).

Public API (stable; the EarthMapper joint layout, models/layout.py, builds its masks with these;
the scale index of every token comes from earthmapper_jax.scales.scale_ids):

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
`within_scale` is validated where it enters (the model config check); here it is an invariant.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax.numpy as jnp
import numpy as np
from flax import struct

from earthmapper_jax.scales import scale_ids

WITHIN_SCALE_CHOICES = ("all", "group", "ordered")


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
    assert within_scale in WITHIN_SCALE_CHOICES, within_scale
    coarser = q_scale[..., :, None] > k_scale[..., None, :]
    same = q_scale[..., :, None] == k_scale[..., None, :]
    if within_scale == "all":
        return coarser | same
    assert q_group is not None, f"within_scale={within_scale!r} needs group ids"
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
