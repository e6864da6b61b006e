"""EarthMapper's joint sequence: where each token of the satellite/map pair sits, who sees whom.

Per scale k a satellite block s_k then a map block m_k, each pn_k² tokens in row-major order,
so the joint sequence is 2·Σpn² long (1360 at 256²). A "half" is one modality's own sequence in
VAR's order (`earthmapper_jax.scales`: Σpn² tokens, scales concatenated).

    SAT, MAP = 0, 1; MODALITIES = ("sat", "map")     modality ids and the names batches use
    joint_layout(patch_nums) -> dict                  half_len, length, begins[k] (joint offset
        of scale k) and per joint position its scale, modality and index in its half (numpy)
    joint_mask(patch_nums, within_scale) -> (L, L) bool       True = may attend
    directed_mask(patch_nums, within_scale, lead) -> (L, L)   a translation row's mask
    to_joint(sat, map, patch_nums) -> (B, L, ...); from_joint(x, patch_nums) -> (sat, map)

Attention (`within_scale`, via masks.block_causal_mask with group = modality): a token sees
every token, of both modalities, of coarser scales, never a finer scale, and inside its scale
"group" only its own block (the paper), "all" both blocks, "ordered" the map block sees the
satellite block but not the reverse. A directed row's condition half `lead` comes first
inside each scale ("ordered" with the condition as group 0).
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

from earthmapper_jax.models.masks import block_causal_mask
from earthmapper_jax.scales import scale_ids, scale_offsets

SAT, MAP = 0, 1
MODALITIES = ("sat", "map")


@functools.lru_cache(maxsize=None)
def _layout(patch_nums: tuple) -> dict:
    half = scale_ids(patch_nums)
    scale, modality, half_index, begins = [], [], [], []
    for si, (b, e) in enumerate(scale_offsets(patch_nums)):
        begins.append(2 * b)
        for m in (SAT, MAP):
            scale.append(np.full(e - b, si, np.int32))
            modality.append(np.full(e - b, m, np.int32))
            half_index.append(np.arange(b, e, dtype=np.int32))
    out = dict(
        half_len=len(half), length=2 * len(half), scale=np.concatenate(scale),
        modality=np.concatenate(modality), half_index=np.concatenate(half_index),
        begins=tuple(begins), half_scale=half,
    )
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)  # shared by every caller through the cache
    return out


def joint_layout(patch_nums: Sequence[int]) -> dict:
    """Static description of the joint sequence (see module doc)."""
    return _layout(tuple(int(p) for p in patch_nums))


def joint_mask(patch_nums: Sequence[int], within_scale: str = "group") -> np.ndarray:
    """(L, L) bool attention mask of the joint sequence (True = may attend)."""
    lay = joint_layout(patch_nums)
    return block_causal_mask(lay["scale"], q_group=lay["modality"], within_scale=within_scale)


def directed_mask(patch_nums: Sequence[int], within_scale: str = "group",
                  lead: Optional[int] = None) -> np.ndarray:
    """Mask of a directed (translation) row whose condition half is `lead` (SAT/MAP): as
    joint_mask, plus, inside each scale, the target half sees the condition half ("ordered",
    condition first). lead=None: joint_mask."""
    if lead is None or within_scale == "all":
        return joint_mask(patch_nums, within_scale)
    lay = joint_layout(patch_nums)
    group = lay["modality"] if lead == SAT else 1 - lay["modality"]
    return block_causal_mask(lay["scale"], q_group=group, within_scale="ordered")


def to_joint(sat, mapp, patch_nums: Sequence[int]):
    """Two half sequences (B, Σpn², ...) -> the joint layout (B, 2Σpn², ...) (static slices)."""
    parts = []
    for b, e in scale_offsets(patch_nums):
        parts += [sat[:, b:e], mapp[:, b:e]]
    return jnp.concatenate(parts, axis=1)


def from_joint(x, patch_nums: Sequence[int]):
    """Inverse of to_joint: (B, L, ...) -> (sat (B, Σpn², ...), map (B, Σpn², ...))."""
    sats, maps = [], []
    for b, e in scale_offsets(patch_nums):
        n = e - b
        sats.append(x[:, 2 * b : 2 * b + n])
        maps.append(x[:, 2 * b + n : 2 * b + 2 * n])
    return jnp.concatenate(sats, 1), jnp.concatenate(maps, 1)
