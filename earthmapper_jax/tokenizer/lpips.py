"""LPIPS v0.1 perceptual distance in JAX (AlexNet or VGG16 backbone): the tokenizer's
perceptual loss and the evaluation metric.

LPIPS(x, y) = sum over 5 backbone taps of the spatial mean of sum_c w_c (unit-normalised
feature difference)^2, with images in [-1, 1] first shifted and scaled channel-wise (the
`lpips` package's ScalingLayer). Taps: AlexNet relu1..relu5 (the `lpips` package's default
net, `net='alex'`), VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. Two files per backbone,
neither ships here (no downloads): torchvision's ImageNet weights (keys `features.{i}.weight`;
the classifier keys are ignored) and the LPIPS v0.1 linear heads (keys
`lin{k}.model.1.weight`, shape [1, C, 1, 1]), which `pip install lpips` also puts in
site-packages/lpips/weights/v0.1/. `load_lpips(backbone_path, lin_path, net)` reads them.
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.io.pth import load_state_dict

# LPIPS' fixed ScalingLayer constants (inputs in [-1, 1]).
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
LIN_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth"
# Per backbone: the torchvision `features` conv indices grouped into the 5 tapped stages,
# each conv's (out channels, kernel, stride, padding), the max pool (window, stride) that
# opens stages 2.., which stages have it, and where the ImageNet weights come from.
BACKBONES = {
    "vgg": dict(
        stages=((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28)),
        convs={**{i: (64, 3, 1, 1) for i in (0, 2)}, **{i: (128, 3, 1, 1) for i in (5, 7)},
               **{i: (256, 3, 1, 1) for i in (10, 12, 14)},
               **{i: (512, 3, 1, 1) for i in (17, 19, 21, 24, 26, 28)}},
        pool=(2, 2), pooled_stages=(1, 2, 3, 4), name="VGG16",
        file="vgg16-397923af.pth", url="https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": dict(
        stages=((0,), (3,), (6,), (8,), (10,)),
        convs={0: (64, 11, 4, 2), 3: (192, 5, 1, 2), 6: (384, 3, 1, 1), 8: (256, 3, 1, 1),
               10: (256, 3, 1, 1)},
        pool=(3, 2), pooled_stages=(1, 2), name="AlexNet",
        file="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}
VGG_STAGES = BACKBONES["vgg"]["stages"]
VGG_WIDTHS = (64, 128, 256, 512, 512)


def stage_widths(net: str) -> tuple:
    b = BACKBONES[net]
    return tuple(b["convs"][layers[-1]][0] for layers in b["stages"])


class LPIPS(nn.Module):
    """(x, y) images (B, H, W, 3) in [-1, 1] -> LPIPS distance (B,)."""

    net: str = "vgg"
    precision: jax.lax.Precision | None = None  # HIGHEST for the metric; default for the loss

    @nn.compact
    def __call__(self, x, y):
        b = BACKBONES[self.net]
        window, stride = b["pool"]
        feats = []
        h = jnp.concatenate([x, y], 0).astype(jnp.float32)
        h = (h - SHIFT) / SCALE
        for s, layers in enumerate(b["stages"]):
            if s in b["pooled_stages"]:
                h = nn.max_pool(h, (window, window), strides=(stride, stride))
            for i in layers:
                width, k, st, p = b["convs"][i]
                conv = nn.Conv(width, (k, k), strides=(st, st), padding=((p, p), (p, p)),
                               precision=self.precision, name=f"conv_{i}")
                h = nn.relu(conv(h))
            feats.append(h)
        n = x.shape[0]
        total = 0.0
        for k, f in enumerate(feats):
            f = f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)
            d = jnp.square(f[:n] - f[n:])
            w = self.param(f"lin_{k}", nn.initializers.ones, (f.shape[-1],))
            total = total + jnp.mean(jnp.sum(d * w, axis=-1), axis=(1, 2))
        return total


def convert_lpips_state_dicts(backbone_sd: dict, lin_sd: dict, net: str = "vgg") -> dict:
    """Params for `LPIPS(net)` from torchvision backbone and LPIPS linear-head state dicts."""
    b = BACKBONES[net]
    params = {}
    for layers in b["stages"]:
        for i in layers:
            for suffix in ("weight", "bias"):
                if f"features.{i}.{suffix}" not in backbone_sd:
                    raise CheckpointError(f"{b['name']} weights lack key features.{i}.{suffix}")
            kernel = np.asarray(backbone_sd[f"features.{i}.weight"], np.float32)
            width, k = b["convs"][i][:2]
            if kernel.shape[0] != width or kernel.shape[2:] != (k, k):
                raise CheckpointError(f"{b['name']} features.{i}.weight has shape "
                                      f"{kernel.shape}, expected ({width}, _, {k}, {k})")
            params[f"conv_{i}"] = {"kernel": kernel.transpose(2, 3, 1, 0),
                                   "bias": np.asarray(backbone_sd[f"features.{i}.bias"], np.float32)}
    for k, width in enumerate(stage_widths(net)):
        key = f"lin{k}.model.1.weight"
        if key not in lin_sd:
            raise CheckpointError(f"LPIPS linear weights lack key {key}")
        w = np.asarray(lin_sd[key], np.float32).reshape(-1)
        if w.shape != (width,):
            raise CheckpointError(f"{key} has {w.size} values, expected {width} (net {net!r})")
        params[f"lin_{k}"] = w
    return params


@functools.lru_cache(maxsize=4)
def load_lpips(backbone_path, lin_path, net: str = "vgg",
               flags=("config.loss.lpips_vgg_path", "config.loss.lpips_lin_path")):
    """LPIPS params from the two official weight files (CheckpointError if one is absent).

    `flags` name the settings that gave the two paths, for the error message.
    """
    b = BACKBONES[net]
    files = ((f"{b['name']} backbone (torchvision {b['file']})", backbone_path, b["url"], flags[0]),
             (f"LPIPS v0.1 linear heads (lpips weights/v0.1/{net}.pth)", lin_path,
              LIN_URL.format(net=net), flags[1]))
    for what, path, url, flag in files:
        if not path or not os.path.isfile(path):
            raise CheckpointError(f"LPIPS is enabled but the {what} file is missing: {path!r}; "
                                  f"download it from {url} and pass its path with {flag}")
    params = convert_lpips_state_dicts(load_state_dict(backbone_path), load_state_dict(lin_path), net)
    return jax.tree.map(jnp.asarray, params)


def lpips_distance(params, x, y, net: str = "vgg", precision=None):
    """LPIPS(x, y) per image (B,); `params` from load_lpips (held fixed: no gradient)."""
    return LPIPS(net=net, precision=precision).apply({"params": jax.lax.stop_gradient(params)}, x, y)
