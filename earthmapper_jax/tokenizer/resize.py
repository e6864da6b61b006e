"""PyTorch-exact image resizes as fixed matrices (applied separably with einsum).

VAR's tokenizer resizes feature maps with `F.interpolate(mode='area')` (downsampling the residual
and the running f_hat) and `F.interpolate(mode='bicubic', align_corners=False)` (upsampling each
scale's code map). `jax.image.resize` matches neither (its cubic kernel uses a=-0.5 and it
renormalises border weights; it has no 'area' mode), and VAR's released weights only reproduce
VAR's tokens with the exact operators. All sizes are static, so each resize is an (out, in)
matrix built once in float64 numpy, cached per size pair, and applied as two small matmuls.

Semantics (PyTorch, `align_corners=False`, no antialias):
- area = adaptive average pooling: output cell i averages input cells
  [floor(i*In/Out), ceil((i+1)*In/Out)), windows overlap when Out does not divide In.
- bilinear: source coordinate x = (i + 0.5) * In/Out - 0.5 clamped below at 0, taps floor(x) and
  floor(x)+1 with the upper index clamped to In-1 (pytorch-fid's Inception resize, VAR's
  zero-shot editing masks).
- bicubic: source coordinate x = (i + 0.5) * In/Out - 0.5 (not clamped), cubic convolution kernel
  with A = -0.75 on the 4 taps floor(x)-1 .. floor(x)+2, tap indices clamped to [0, In-1].
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

BICUBIC_A = -0.75


@functools.lru_cache(maxsize=None)
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of PyTorch `mode='area'` (adaptive average pooling) in 1-D."""
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)  # ceil division, exact in integers
        m[i, start:end] = 1.0 / (end - start)
    m = m.astype(np.float32)
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=None)
def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix of PyTorch `mode='bilinear'` (align_corners=False) in 1-D.

    Kept in float64 (read-only): the editing masks threshold it at 0.5 in float64; image
    resizes cast it to their dtype.
    """
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        x = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        x0 = min(int(np.floor(x)), n_in - 1)
        x1 = min(x0 + 1, n_in - 1)
        t = x - x0
        m[i, x0] += 1.0 - t
        m[i, x1] += t
    m.setflags(write=False)
    return m


def cubic_weights(t: float, a: float = BICUBIC_A) -> tuple:
    """Weights of the 4 taps at offsets -1, 0, 1, 2 for fractional position t in [0, 1)."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


_cubic_weights = cubic_weights  # older name, imported by models/dinov2.py


@functools.lru_cache(maxsize=None)
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of PyTorch `mode='bicubic'` (A=-0.75, align_corners=False) in 1-D."""
    m = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        x = (i + 0.5) * scale - 0.5
        x0 = int(np.floor(x))
        for k, w in enumerate(cubic_weights(x - x0)):
            # Taps past the border read the edge pixel (PyTorch clamps the index), so their
            # weights accumulate on it.
            m[i, min(max(x0 - 1 + k, 0), n_in - 1)] += w
    m = m.astype(np.float32)
    m.setflags(write=False)
    return m


def _apply(x, mh: np.ndarray, mw: np.ndarray):
    # Exact fp32 matmuls even where the default precision would round to bf16/tf32 (GPU/TPU);
    # these matrices are tiny next to the convolutions.
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("oh,bhwc->bowc", jnp.asarray(mh, x.dtype), x, precision=hi)
    return jnp.einsum("pw,bowc->bopc", jnp.asarray(mw, x.dtype), y, precision=hi)


def area_resize(x, size):
    """PyTorch `F.interpolate(x, size, mode='area')` for NHWC `x`; `size` is an int or (h, w)."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if (h, w) == x.shape[1:3]:
        return x
    return _apply(x, area_matrix(x.shape[1], h), area_matrix(x.shape[2], w))


def bicubic_resize(x, size):
    """PyTorch `F.interpolate(x, size, mode='bicubic', align_corners=False)` for NHWC `x`."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if (h, w) == x.shape[1:3]:
        return x
    return _apply(x, bicubic_matrix(x.shape[1], h), bicubic_matrix(x.shape[2], w))
