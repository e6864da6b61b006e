"""Inception-v3 pool3 features (2048-d) exactly as pytorch-fid computes them, in JAX.

    params = load_inception("pt_inception-2015-12-05-6726825d.pth")   # once
    feats = inception_features(params, images)   # (B, H, W, 3) in [0, 1] -> (B, 2048) float32

pytorch-fid's `InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True)`:
bilinear resize to 299x299 (PyTorch `F.interpolate(align_corners=False)`, no antialiasing,
so inputs larger than 299 are point-sampled between two pixels, not averaged), x -> 2x - 1, the
FID variant of Inception-v3 (the TF graph's average pools exclude the zero padding from the
count; Mixed_7c's pool branch is a 3x3 max pool), global average pool. pytorch-fid feeds
images decoded from 8-bit files, so callers scoring in-memory images round them to 8 bits
first (`earthmapper_jax.io.images.to_uint8`) to score the same numbers a PNG would.

Convolutions run at HIGHEST precision: on GPUs the default rounds float32 matmuls to tf32,
which moves the features by ~1e-3; the network is cheap next to the models it scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.evaluation.inception_weights import load_inception_params
from earthmapper_jax.tokenizer.resize import bilinear_matrix

SIZE = 299
FEATURE_DIM = 2048
_HI = jax.lax.Precision.HIGHEST


def load_inception(path, flag: str = "--inception-weights"):
    """Params (device arrays) from pytorch-fid's FID Inception weights file."""
    return jax.tree.map(jnp.asarray, load_inception_params(path, flag))


@jax.jit
def _resize_299(images):
    x = images.astype(jnp.float32)
    mh = jnp.asarray(bilinear_matrix(x.shape[1], SIZE), jnp.float32)
    mw = jnp.asarray(bilinear_matrix(x.shape[2], SIZE), jnp.float32)
    x = jnp.einsum("oh,bhwc->bowc", mh, x, precision=_HI)
    return jnp.einsum("pw,bowc->bopc", mw, x, precision=_HI)


def _conv(p, x, stride=1, pad=None):
    """Conv + folded BatchNorm + ReLU; `pad` None = 'same' for odd kernels, else (ph, pw)."""
    kh, kw = p["kernel"].shape[:2]
    ph, pw = ((kh - 1) // 2, (kw - 1) // 2) if pad is None else pad
    y = jax.lax.conv_general_dilated(
        x, p["kernel"], (stride, stride), ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HI)
    return jax.nn.relu(y + p["bias"])


def _chain(p, names, x):
    for n in names:
        x = _conv(p[n], x)
    return x


def _max_pool(x, stride, pad):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                                 ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_exclude_pad(x):
    # 3x3, stride 1, padding 1, dividing by the number of real (unpadded) pixels in the window.
    pads = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
    h, w = x.shape[1:3]
    rows = np.minimum(np.arange(h) + 1, h - 1) - np.maximum(np.arange(h) - 1, 0) + 1
    cols = np.minimum(np.arange(w) + 1, w - 1) - np.maximum(np.arange(w) - 1, 0) + 1
    count = np.outer(rows, cols).astype(np.float32)[None, :, :, None]
    return total / count


def _mixed_a(p, x):
    return jnp.concatenate([
        _conv(p["branch1x1"], x),
        _chain(p, ("branch5x5_1", "branch5x5_2"), x),
        _chain(p, ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), x),
        _conv(p["branch_pool"], _avg_pool_exclude_pad(x)),
    ], axis=-1)


def _mixed_b(p, x):
    dbl = _chain(p, ("branch3x3dbl_1", "branch3x3dbl_2"), x)
    return jnp.concatenate([
        _conv(p["branch3x3"], x, stride=2, pad=(0, 0)),
        _conv(p["branch3x3dbl_3"], dbl, stride=2, pad=(0, 0)),
        _max_pool(x, 2, 0),
    ], axis=-1)


def _mixed_c(p, x):
    return jnp.concatenate([
        _conv(p["branch1x1"], x),
        _chain(p, ("branch7x7_1", "branch7x7_2", "branch7x7_3"), x),
        _chain(p, tuple(f"branch7x7dbl_{i}" for i in range(1, 6)), x),
        _conv(p["branch_pool"], _avg_pool_exclude_pad(x)),
    ], axis=-1)


def _mixed_d(p, x):
    b3 = _conv(p["branch3x3_1"], x)
    b7 = _chain(p, ("branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3"), x)
    return jnp.concatenate([
        _conv(p["branch3x3_2"], b3, stride=2, pad=(0, 0)),
        _conv(p["branch7x7x3_4"], b7, stride=2, pad=(0, 0)),
        _max_pool(x, 2, 0),
    ], axis=-1)


def _mixed_e(p, x, pool):
    b3 = _conv(p["branch3x3_1"], x)
    dbl = _chain(p, ("branch3x3dbl_1", "branch3x3dbl_2"), x)
    return jnp.concatenate([
        _conv(p["branch1x1"], x),
        _conv(p["branch3x3_2a"], b3), _conv(p["branch3x3_2b"], b3),
        _conv(p["branch3x3dbl_3a"], dbl), _conv(p["branch3x3dbl_3b"], dbl),
        _conv(p["branch_pool"], pool(x)),
    ], axis=-1)


@jax.jit
def _network(params, x):
    """(B, 299, 299, 3) in [-1, 1] -> (B, 2048)."""
    x = _conv(params["Conv2d_1a_3x3"], x, stride=2, pad=(0, 0))
    x = _conv(params["Conv2d_2a_3x3"], x, pad=(0, 0))
    x = _conv(params["Conv2d_2b_3x3"], x, pad=(1, 1))
    x = _max_pool(x, 2, 0)
    x = _conv(params["Conv2d_3b_1x1"], x)
    x = _conv(params["Conv2d_4a_3x3"], x, pad=(0, 0))
    x = _max_pool(x, 2, 0)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = _mixed_a(params[name], x)
    x = _mixed_b(params["Mixed_6a"], x)
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = _mixed_c(params[name], x)
    x = _mixed_d(params["Mixed_7a"], x)
    x = _mixed_e(params["Mixed_7b"], x, _avg_pool_exclude_pad)
    x = _mixed_e(params["Mixed_7c"], x, lambda h: _max_pool(h, 1, 1))
    return jnp.mean(x, axis=(1, 2))


def inception_features(params, images):
    """pytorch-fid's pool3 features of (B, H, W, 3) float images in [0, 1]: (B, 2048) float32.

    Two compiled pieces, the resize (per input size) and the network (one 299x299 shape), so
    a new input size does not recompile the network; a new batch size does, so callers
    stream fixed-size batches (pad the last one).
    """
    return _network(params, 2.0 * _resize_299(images) - 1.0)
