"""The FID Inception-v3 checkpoint: its layout, and conversion to the JAX network's params.

The file users have is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, the TF 2015-12-05
FID graph ported to torchvision's InceptionV3 key layout (`Conv2d_1a_3x3.conv.weight`,
`Mixed_5b.branch1x1.bn.running_var`, ..., `fc.weight` (1008, 2048)). Every conv is followed
by an inference BatchNorm (eps 1e-3); `convert_state_dict` folds the BatchNorm into the conv
(kernel * gamma / sqrt(var + eps), bias beta - mean * gamma / sqrt(var + eps), in float64) so
the network runs one conv + bias + ReLU per layer.

Numpy only (no jax import), so the fixture script can use `LAYOUT` in the PyTorch venv.
"""

from __future__ import annotations

import os

import numpy as np

from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.io.pth import load_state_dict

FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FILE_NAME
BN_EPS = 1e-3
FID_CLASSES = 1008  # torchvision's ImageNet Inception has 1000; the FID graph 1008


def _block_a(cin, pool):
    return {"branch1x1": (cin, 64, 1, 1), "branch5x5_1": (cin, 48, 1, 1),
            "branch5x5_2": (48, 64, 5, 5), "branch3x3dbl_1": (cin, 64, 1, 1),
            "branch3x3dbl_2": (64, 96, 3, 3), "branch3x3dbl_3": (96, 96, 3, 3),
            "branch_pool": (cin, pool, 1, 1)}


def _block_b(cin):
    return {"branch3x3": (cin, 384, 3, 3), "branch3x3dbl_1": (cin, 64, 1, 1),
            "branch3x3dbl_2": (64, 96, 3, 3), "branch3x3dbl_3": (96, 96, 3, 3)}


def _block_c(c7):
    return {"branch1x1": (768, 192, 1, 1), "branch7x7_1": (768, c7, 1, 1),
            "branch7x7_2": (c7, c7, 1, 7), "branch7x7_3": (c7, 192, 7, 1),
            "branch7x7dbl_1": (768, c7, 1, 1), "branch7x7dbl_2": (c7, c7, 7, 1),
            "branch7x7dbl_3": (c7, c7, 1, 7), "branch7x7dbl_4": (c7, c7, 7, 1),
            "branch7x7dbl_5": (c7, 192, 1, 7), "branch_pool": (768, 192, 1, 1)}


def _block_d():
    return {"branch3x3_1": (768, 192, 1, 1), "branch3x3_2": (192, 320, 3, 3),
            "branch7x7x3_1": (768, 192, 1, 1), "branch7x7x3_2": (192, 192, 1, 7),
            "branch7x7x3_3": (192, 192, 7, 1), "branch7x7x3_4": (192, 192, 3, 3)}


def _block_e(cin):
    return {"branch1x1": (cin, 320, 1, 1), "branch3x3_1": (cin, 384, 1, 1),
            "branch3x3_2a": (384, 384, 1, 3), "branch3x3_2b": (384, 384, 3, 1),
            "branch3x3dbl_1": (cin, 448, 1, 1), "branch3x3dbl_2": (448, 384, 3, 3),
            "branch3x3dbl_3a": (384, 384, 1, 3), "branch3x3dbl_3b": (384, 384, 3, 1),
            "branch_pool": (cin, 192, 1, 1)}


# Every conv of the network up to pool3 as (cin, cout, kh, kw), keyed like the checkpoint
# (without the `.conv.weight` / `.bn.*` suffixes); stem convs are top level, the rest nested.
LAYOUT = {
    "Conv2d_1a_3x3": (3, 32, 3, 3), "Conv2d_2a_3x3": (32, 32, 3, 3),
    "Conv2d_2b_3x3": (32, 64, 3, 3), "Conv2d_3b_1x1": (64, 80, 1, 1),
    "Conv2d_4a_3x3": (80, 192, 3, 3),
    "Mixed_5b": _block_a(192, 32), "Mixed_5c": _block_a(256, 64), "Mixed_5d": _block_a(288, 64),
    "Mixed_6a": _block_b(288), "Mixed_6b": _block_c(128), "Mixed_6c": _block_c(160),
    "Mixed_6d": _block_c(160), "Mixed_6e": _block_c(192), "Mixed_7a": _block_d(),
    "Mixed_7b": _block_e(1280), "Mixed_7c": _block_e(2048),
}


def conv_names():
    """(path tuple, (cin, cout, kh, kw)) for every conv, in network order."""
    out = []
    for name, spec in LAYOUT.items():
        if isinstance(spec, dict):
            out += [((name, branch), s) for branch, s in spec.items()]
        else:
            out.append(((name,), spec))
    return out


def checkpoint_shapes() -> dict[str, tuple]:
    """{key: shape} of every tensor pytorch-fid's checkpoint holds (fc included)."""
    shapes = {}
    for path, (cin, cout, kh, kw) in conv_names():
        key = ".".join(path)
        shapes[f"{key}.conv.weight"] = (cout, cin, kh, kw)
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{key}.bn.{leaf}"] = (cout,)
        shapes[f"{key}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"] = (FID_CLASSES, 2048)
    shapes["fc.bias"] = (FID_CLASSES,)
    return shapes


def convert_state_dict(sd: dict, source: str = "the Inception state dict") -> dict:
    """Params {block: {branch: {kernel (kh, kw, cin, cout), bias}}} with BatchNorm folded in."""
    fc = sd.get("fc.weight")
    if fc is not None and fc.shape[0] != FID_CLASSES:
        raise CheckpointError(
            f"{source}: fc.weight has {fc.shape[0]} classes, expected {FID_CLASSES}; this looks "
            f"like torchvision's ImageNet Inception, not the FID Inception ({FILE_NAME})")
    params = {}
    for path, (cin, cout, kh, kw) in conv_names():
        key = ".".join(path)
        want = {"conv.weight": (cout, cin, kh, kw), "bn.weight": (cout,), "bn.bias": (cout,),
                "bn.running_mean": (cout,), "bn.running_var": (cout,)}
        t = {}
        for leaf, shape in want.items():
            v = sd.get(f"{key}.{leaf}")
            if v is None:
                raise CheckpointError(f"{source}: key {key}.{leaf} is missing; expected the FID "
                                      f"Inception-v3 weights ({FILE_NAME})")
            if tuple(v.shape) != shape:
                raise CheckpointError(f"{source}: {key}.{leaf} has shape {tuple(v.shape)}, "
                                      f"expected {shape}")
            t[leaf] = np.asarray(v, np.float64)
        scale = t["bn.weight"] / np.sqrt(t["bn.running_var"] + BN_EPS)
        kernel = (t["conv.weight"] * scale[:, None, None, None]).transpose(2, 3, 1, 0)
        leaf = {"kernel": kernel.astype(np.float32),
                "bias": (t["bn.bias"] - t["bn.running_mean"] * scale).astype(np.float32)}
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = leaf
    return params


def load_inception_params(path, flag: str = "--inception-weights") -> dict:
    """Numpy params from pytorch-fid's FID Inception file; CheckpointError names what is missing."""
    if not path or not os.path.isfile(path):
        raise CheckpointError(
            f"the FID Inception-v3 weights file is missing: {path!r}; download {FILE_NAME} "
            f"from {URL} (pytorch-fid's release) and pass its path with {flag}")
    return convert_state_dict(load_state_dict(path), source=os.fspath(path))
