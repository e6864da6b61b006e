"""LPIPS (v0.1, VGG16 backbone) perceptual distance in JAX, for tokenizer training.

LPIPS(x, y) = sum over the VGG16 taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of the spatial
mean of sum_c w_c (unit-normalised feature difference)^2, with images in [-1, 1] first shifted
and scaled channel-wise to ImageNet statistics. Two files are needed, neither ships with this
package (no downloads here): torchvision's `vgg16-397923af.pth` (keys `features.{i}.weight`)
and the LPIPS v0.1 linear heads `vgg.pth` (keys `lin{k}.model.1.weight`, shape [1, C, 1, 1])
from the `lpips` project. `load_lpips(vgg_path, lin_path)` reads them into a params pytree.
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import CheckpointError

# LPIPS' fixed ScalingLayer constants (inputs in [-1, 1]).
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
# VGG16 `features` conv layer indices, grouped into the 5 stages LPIPS taps (max-pool between).
VGG_STAGES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
VGG_WIDTHS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """(x, y) images (B, H, W, 3) in [-1, 1] -> LPIPS distance (B,)."""

    @nn.compact
    def __call__(self, x, y):
        feats = []
        h = jnp.concatenate([x, y], 0).astype(jnp.float32)
        h = (h - SHIFT) / SCALE
        for s, (layers, width) in enumerate(zip(VGG_STAGES, VGG_WIDTHS)):
            if s:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            for i in layers:
                h = nn.relu(nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), name=f"conv_{i}")(h))
            feats.append(h)
        b = x.shape[0]
        total = 0.0
        for k, f in enumerate(feats):
            f = f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)
            d = jnp.square(f[:b] - f[b:])
            w = self.param(f"lin_{k}", nn.initializers.ones, (f.shape[-1],))
            total = total + jnp.mean(jnp.sum(d * w, axis=-1), axis=(1, 2))
        return total


def convert_lpips_state_dicts(vgg_sd: dict, lin_sd: dict) -> dict:
    """Params for `LPIPS` from torchvision VGG16 and LPIPS linear-head state dicts."""
    params = {}
    for layers in VGG_STAGES:
        for i in layers:
            for suffix in ("weight", "bias"):
                if f"features.{i}.{suffix}" not in vgg_sd:
                    raise CheckpointError(f"VGG16 weights lack key features.{i}.{suffix}")
            params[f"conv_{i}"] = {
                "kernel": np.asarray(vgg_sd[f"features.{i}.weight"], np.float32).transpose(2, 3, 1, 0),
                "bias": np.asarray(vgg_sd[f"features.{i}.bias"], np.float32),
            }
    for k, width in enumerate(VGG_WIDTHS):
        key = f"lin{k}.model.1.weight"
        if key not in lin_sd:
            raise CheckpointError(f"LPIPS linear weights lack key {key}")
        w = np.asarray(lin_sd[key], np.float32).reshape(-1)
        if w.shape != (width,):
            raise CheckpointError(f"{key} has {w.size} values, expected {width}")
        params[f"lin_{k}"] = w
    return params


@functools.lru_cache(maxsize=2)
def load_lpips(vgg_path, lin_path):
    """LPIPS params from the two official weight files (CheckpointError if absent)."""
    from earthmapper_jax.io.pth import load_state_dict

    for what, path in (("VGG16 backbone (torchvision vgg16-397923af.pth)", vgg_path),
                       ("LPIPS v0.1 linear heads (lpips weights/v0.1/vgg.pth)", lin_path)):
        if not path or not os.path.isfile(path):
            raise CheckpointError(
                f"LPIPS is enabled but the {what} file is missing: {path!r}; set "
                "config.loss.lpips_vgg_path and config.loss.lpips_lin_path, or lpips_weight=0")
    params = convert_lpips_state_dicts(load_state_dict(vgg_path), load_state_dict(lin_path))
    return jax.tree.map(jnp.asarray, params)


def lpips_distance(params, x, y):
    """LPIPS(x, y) per image (B,); `params` from load_lpips (held fixed: no gradient)."""
    return LPIPS().apply({"params": jax.lax.stop_gradient(params)}, x, y)
