"""PSNR and SSIM for images in [-1, 1] (the tokenizer's range), measured on the [0, 1] scale.

The definitions live in `earthmapper_jax.evaluation.pixels` (one home, checked against
scikit-image); these wrappers only map [-1, 1] to [0, 1] first.
"""

from earthmapper_jax.evaluation import pixels


def _unit(x):
    return (x + 1.0) / 2.0


def psnr(x, y):
    """Per-image PSNR in dB of x vs y (B, H, W, C) in [-1, 1], data range [0, 1]."""
    return pixels.psnr(_unit(x), _unit(y))


def ssim(x, y):
    """Per-image SSIM of x vs y (B, H, W, C) in [-1, 1] (11x11 Gaussian window, sigma 1.5)."""
    return pixels.ssim(_unit(x), _unit(y))
