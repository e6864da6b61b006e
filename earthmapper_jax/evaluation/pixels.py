"""Paired pixel metrics per image for (B, H, W, C) float images in [0, 1]: SSIM, PSNR, RMSE.

- SSIM (Wang et al. 2004) as scikit-image's `structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)`: Gaussian window
  sigma 1.5 truncated at 3.5 sigma (11 taps), K1 0.01, K2 0.03, the SSIM map averaged over the
  pixels at least 5 from the border (scikit-image filters the whole image and then crops; a
  'valid' filter computes exactly those pixels) and over the channels.
- PSNR = 10 log10(1 / MSE) dB (data range 1), MSE over all pixels and channels of one image;
  the MSE is floored at 1e-12, so identical images give 120 dB (scikit-image: +inf) and a
  split's mean stays finite.
- RMSE = sqrt(MSE) on the [0, 1] scale (the paper's tables are on this scale).
A split's figure is the mean of the per-image values. `paired_metrics` computes the three in
one compiled call and `paired_lpips` LPIPS (tokenizer/lpips.py) compiled once per backbone
(`earthmapper evaluate`, the training task's periodic evaluation).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import InputError
from earthmapper_jax.tokenizer.lpips import lpips_distance

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
K1, K2 = 0.01, 0.03
MSE_FLOOR = 1e-12


def gaussian_taps(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate * sigma + 0.5), normalised to sum 1."""
    r = int(truncate * sigma + 0.5)
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return g / g.sum()


def _valid_blur(x, taps):
    # Separable 'valid' filtering of (B, H, W, C) as sums of shifted slices: 2 x 11
    # multiply-adds per value (XLA's grouped convolutions are ~100x slower on CPU).
    n = taps.shape[0]
    h, w = x.shape[1] - n + 1, x.shape[2] - n + 1
    x = sum(float(t) * x[:, k:k + h] for k, t in enumerate(taps))
    return sum(float(t) * x[:, :, k:k + w] for k, t in enumerate(taps))


def ssim(x, y, sigma: float = SSIM_SIGMA):
    """Per-image SSIM (B,) of x vs y, (B, H, W, C) in [0, 1]; H and W at least 11."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    taps = gaussian_taps(sigma)
    if x.shape != y.shape or x.ndim != 4 or min(x.shape[1:3]) < taps.shape[0]:
        raise InputError(f"SSIM needs two (B, H, W, C) images of one shape with H, W >= "
                         f"{taps.shape[0]}, got {x.shape} and {y.shape}")
    # Centre on the pair's mean before the second moments: the variances are differences of
    # near-equal float32 moments, and centring shrinks both terms (SSIM is shift-invariant
    # in them).
    shift = jnp.mean((x + y) / 2, axis=(1, 2, 3), keepdims=True)
    xc, yc = x - shift, y - shift
    c = x.shape[-1]
    moments = _valid_blur(jnp.concatenate([xc, yc, xc * xc, yc * yc, xc * yc], axis=-1), taps)
    mxc, myc, exx, eyy, exy = (moments[..., i * c:(i + 1) * c] for i in range(5))
    vx, vy, cxy = exx - mxc * mxc, eyy - myc * myc, exy - mxc * myc
    mx, my = mxc + shift, myc + shift
    c1, c2 = K1 ** 2, K2 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(1, 2, 3))


def mse(x, y):
    """Per-image mean squared error (B,) of images in [0, 1]."""
    d = jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)
    return jnp.mean(d * d, axis=tuple(range(1, d.ndim)))


def psnr(x, y):
    """Per-image PSNR (B,) in dB, data range 1 (at most 120 dB)."""
    return -10.0 * jnp.log10(jnp.maximum(mse(x, y), MSE_FLOOR))


def rmse(x, y):
    """Per-image RMSE (B,) on the [0, 1] scale."""
    return jnp.sqrt(mse(x, y))


@jax.jit
def paired_metrics(x, y) -> dict:
    """{"ssim", "psnr", "rmse"}: per-image (B,) values of x vs y, (B, H, W, C) in [0, 1]."""
    return {"ssim": ssim(x, y), "psnr": psnr(x, y), "rmse": rmse(x, y)}


@functools.partial(jax.jit, static_argnames="net")
def paired_lpips(params, x, y, net: str):
    """Per-image LPIPS (B,) of x vs y, (B, H, W, 3) in [-1, 1] (params from load_lpips)."""
    return lpips_distance(params, x, y, net=net)
