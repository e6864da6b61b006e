"""Scale geometry of the multi-scale token pyramid: the one home for Σpn², offsets and flattening.

A pyramid of K scales holds pn_k × pn_k tokens at scale k; flattened (VAR's order) the scales are
concatenated, each row-major. Everything that needs where a scale starts, how long the flat
sequence is, or how to go between K token maps and one flat row, calls these.

    seq_len(patch_nums) -> Σ pn²
    scale_offsets(patch_nums) -> [(begin, end), ...]     VAR's `begin_ends`
    scale_ids(patch_nums) -> (Σpn²,) int32                the scale of every flat position
    flatten_tokens(maps) -> (B, Σpn²) int32               K maps (B, pn, pn) or (B, pn²)
    split_tokens(flat, patch_nums) -> K maps (B, pn, pn)
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def seq_len(patch_nums: Sequence[int]) -> int:
    return int(sum(int(p) ** 2 for p in patch_nums))


def scale_offsets(patch_nums: Sequence[int]) -> list[tuple[int, int]]:
    out, cur = [], 0
    for pn in patch_nums:
        out.append((cur, cur + int(pn) ** 2))
        cur += int(pn) ** 2
    return out


def scale_ids(patch_nums: Sequence[int]) -> np.ndarray:
    return np.concatenate([np.full(int(pn) ** 2, si, np.int32) for si, pn in enumerate(patch_nums)])


def flatten_tokens(maps) -> jnp.ndarray:
    B = maps[0].shape[0]
    return jnp.concatenate([jnp.asarray(m).reshape(B, -1) for m in maps], 1).astype(jnp.int32)


def split_tokens(flat, patch_nums: Sequence[int]) -> list:
    return [flat[:, b:e].reshape(-1, int(pn), int(pn))
            for (b, e), pn in zip(scale_offsets(patch_nums), patch_nums)]
