"""In-/out-painting masks: the user's mask -> which tokens of every scale are kept.

    box_mask(size, box, outpaint=False) -> (size, size) bool generate-mask of a box
    keep_grid(mask, batch, image_size, last) -> (B, pn_K, pn_K) float fraction of kept pixels
        per last-scale token (mask at image resolution or on the last token grid; True =
        generate); InputError for any other shape
    scale_masks(keep_last, patch_nums) -> per scale (B, pn, pn) bool keep-masks, as VAR's
        zero-shot editing resizes them (bilinear, > 0.5; scales with pn² <= 3 kept whole)
"""

from __future__ import annotations

import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.tokenizer.resize import area_matrix, bilinear_matrix


def scale_masks(keep_last: np.ndarray, patch_nums) -> list:
    """Known-token masks per scale from a (B, pn_K, pn_K) float 'fraction kept' grid, as VAR's
    zero-shot editing: bilinear to pn×pn, > 0.5; scales with pn² <= 3 are kept everywhere."""
    out = []
    for pn in patch_nums:
        if pn * pn <= 3:
            out.append(np.ones((keep_last.shape[0], pn, pn), bool))
            continue
        m = bilinear_matrix(keep_last.shape[1], pn)
        out.append(np.einsum("oh,bhw,pw->bop", m, keep_last, m) > 0.5)
    return out


def box_mask(size: int, box, outpaint: bool = False) -> np.ndarray:
    """(size, size) bool generate-mask of a box (y0, x0, y1, x1) given as fractions in [0, 1]:
    True inside the box (in-painting), or outside it with outpaint=True."""
    y0, x0, y1, x1 = (float(v) for v in box)
    if not (0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1):
        raise InputError(f"box {tuple(box)} must be (y0, x0, y1, x1) fractions with y0<y1, x0<x1 in [0, 1]")
    m = np.zeros((size, size), bool)
    m[int(round(y0 * size)):int(round(y1 * size)), int(round(x0 * size)):int(round(x1 * size))] = True
    return ~m if outpaint else m


def keep_grid(mask, batch: int, image_size: int, last: int) -> np.ndarray:
    """User generate-mask -> (B, pn_K, pn_K) float fraction of kept pixels per token."""
    m = np.asarray(mask)
    if m.dtype != bool and not np.isin(m, (0, 1)).all():
        raise InputError("mask must be boolean (True = generate, False = keep)")
    m = m.astype(bool)
    if m.ndim == 2:
        m = np.broadcast_to(m, (batch,) + m.shape)
    if m.ndim != 3 or m.shape[0] != batch or m.shape[1] != m.shape[2] or m.shape[1] not in (image_size, last):
        raise InputError(
            f"mask has shape {m.shape}; expected ({batch}, {image_size}, {image_size}) or "
            f"({batch}, {last}, {last}) (True = generate)")
    keep = (~m).astype(np.float64)
    if m.shape[1] == image_size and image_size != last:
        a = area_matrix(image_size, last).astype(np.float64)
        keep = np.einsum("oh,bhw,pw->bop", a, keep, a)
    return keep
