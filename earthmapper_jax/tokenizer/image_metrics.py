"""PSNR and SSIM for images in [-1, 1] (NHWC), measured on the [0, 1] scale (data range 1).

SSIM is the standard definition (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, 'valid' filtering (no padding), per channel, averaged over the map and
the channels; one value per image.
"""

import jax
import jax.numpy as jnp
import numpy as np


def psnr(x, y):
    """Per-image PSNR in dB of x vs y (B, H, W, C) in [-1, 1]."""
    mse = jnp.mean(jnp.square((x.astype(jnp.float32) - y.astype(jnp.float32)) / 2.0), axis=(1, 2, 3))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-12))


def _gaussian(size=11, sigma=1.5):
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _blur(x, g):
    # Separable valid filtering of each channel: (B, H, W, C) -> (B, H-10, W-10, C).
    hi = jax.lax.Precision.HIGHEST
    n = g.shape[0]
    h, w = x.shape[1] - n + 1, x.shape[2] - n + 1
    rows = np.stack([np.pad(g, (i, x.shape[1] - n - i)) for i in range(h)])  # (h, H)
    cols = np.stack([np.pad(g, (i, x.shape[2] - n - i)) for i in range(w)])  # (w, W)
    x = jnp.einsum("oh,bhwc->bowc", rows, x, precision=hi)
    return jnp.einsum("pw,bowc->bopc", cols, x, precision=hi)


def ssim(x, y, window: int = 11, sigma: float = 1.5):
    """Per-image SSIM of x vs y (B, H, W, C) in [-1, 1]; H, W >= window."""
    x = (x.astype(jnp.float32) + 1.0) / 2.0
    y = (y.astype(jnp.float32) + 1.0) / 2.0
    if min(x.shape[1:3]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window}, got {x.shape[1:3]}")
    g = _gaussian(window, sigma)
    c1, c2 = 0.01**2, 0.03**2
    mx, my = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mx * mx
    syy = _blur(y * y, g) - my * my
    sxy = _blur(x * y, g) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return jnp.mean(num / den, axis=(1, 2, 3))
