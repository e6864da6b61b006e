"""DINOv2 ViT (frozen semantic encoder for Semantic Infusion) in Flax Linen, and its converter.

Architecture (facebookresearch/dinov2 `DinoVisionTransformer`, as released on torch hub):
patch embedding (Conv p×p, stride p), a class token, optional register tokens (the "_reg"
models), learned position embeddings for a 518² grid (37×37 patches) that are bicubically
interpolated to other grids, pre-norm blocks x += ls1·attn(norm1(x)); x += ls2·mlp(norm2(x))
(LayerNorm eps 1e-6, LayerScale, softmax attention with scale head_dim^-1/2, exact-erf GELU MLP
or SwiGLU for ViT-g), and a final LayerNorm.

    cfg = VARIANTS["vitb14"]                      # or config_from_state_dict(sd)
    params = convert_state_dict(load_state_dict("dinov2_vitb14_pretrain.pth"))
    feats = DinoV2(**cfg).apply({"params": params}, images_nhwc)   # (B, h/14, w/14, D)

`DinoV2.__call__` takes images already normalised with ImageNet mean/std (see `preprocess`)
and returns the final-normed patch tokens as a grid; `layer=n` returns those of block n
(1-based) passed through the final norm, like `get_intermediate_layers(norm=True)`.

Position-embedding interpolation matches the official code bit for bit in semantics: PyTorch
bicubic (A = -0.75, clamped taps, no antialias) with scale_factor (g + 0.1)/37, so the source
coordinate is (i + 0.5)·37/(g + 0.1) - 0.5 (not 37/g); done once per grid size in numpy.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.errors import CheckpointError
from earthmapper_jax.io.pth import load_state_dict
from earthmapper_jax.tokenizer.resize import _cubic_weights, area_resize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATE_OFFSET = 0.1  # the hub models' interpolate_offset

# Official variants (all patch 14, head_dim 64, position grid 37×37 = 518² images).
VARIANTS = {
    "vits14": dict(embed_dim=384, depth=12, num_heads=6, ffn="mlp"),
    "vitb14": dict(embed_dim=768, depth=12, num_heads=12, ffn="mlp"),
    "vitl14": dict(embed_dim=1024, depth=24, num_heads=16, ffn="mlp"),
    "vitg14": dict(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu"),
}
for _name in list(VARIANTS):
    VARIANTS[_name].update(patch_size=14, pos_grid=37, num_registers=0, mlp_ratio=4.0)
    VARIANTS[_name + "_reg"] = dict(VARIANTS[_name], num_registers=4)
# A random-weight stand-in for tests and the CPU demo (not an official model).
VARIANTS["test_tiny"] = dict(embed_dim=32, depth=1, num_heads=2, ffn="mlp", patch_size=14,
                             pos_grid=4, num_registers=0, mlp_ratio=2.0)


def swiglu_hidden(embed_dim: int, mlp_ratio: float) -> int:
    """Hidden width of DINOv2's fused SwiGLU FFN: 2/3 of the MLP width, rounded up to 8."""
    return (int(int(embed_dim * mlp_ratio) * 2 / 3) + 7) // 8 * 8


@functools.lru_cache(maxsize=None)
def pos_interp_matrix(n_in: int, n_out: int, offset: float = INTERPOLATE_OFFSET) -> np.ndarray:
    """(n_out, n_in) 1-D PyTorch bicubic with scale_factor (n_out + offset)/n_in."""
    m = np.zeros((n_out, n_in), np.float64)
    inv_scale = n_in / (n_out + offset)
    for i in range(n_out):
        x = (i + 0.5) * inv_scale - 0.5
        x0 = int(np.floor(x))
        for k, w in enumerate(_cubic_weights(x - x0)):
            m[i, min(max(x0 - 1 + k, 0), n_in - 1)] += w
    return m.astype(np.float32)


def interpolate_pos_embed(pos_embed, grid_h: int, grid_w: int):
    """(1, 1+M², D) table -> (1, 1+grid_h·grid_w, D), as the official interpolate_pos_encoding."""
    n = pos_embed.shape[1] - 1
    m = int(math.isqrt(n))
    if grid_h == m and grid_w == m:
        return pos_embed
    cls_pe, patch_pe = pos_embed[:, :1], pos_embed[:, 1:].reshape(m, m, -1).astype(jnp.float32)
    hi = jax.lax.Precision.HIGHEST
    patch_pe = jnp.einsum("oh,hwd->owd", pos_interp_matrix(m, grid_h), patch_pe, precision=hi)
    patch_pe = jnp.einsum("pw,owd->opd", pos_interp_matrix(m, grid_w), patch_pe, precision=hi)
    return jnp.concatenate([cls_pe, patch_pe.reshape(1, grid_h * grid_w, -1)], axis=1)


def preprocess(images, size: int = 224):
    """[-1, 1] NHWC images -> ImageNet-normalised NHWC at size×size (PyTorch area resize)."""
    x = (jnp.asarray(images, jnp.float32) + 1.0) * 0.5
    x = area_resize(x, size)
    return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


class _Attention(nn.Module):
    num_heads: int
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x):
        B, N, C = x.shape
        H = self.num_heads
        qkv = nn.Dense(3 * C, dtype=self.dtype, name="qkv")(x).reshape(B, N, 3, H, C // H)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = jax.nn.dot_product_attention(q, k, v, scale=(C // H) ** -0.5)
        return nn.Dense(C, dtype=self.dtype, name="proj")(out.reshape(B, N, C))


class _Mlp(nn.Module):
    hidden: int
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x), approximate=False)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)


class _SwiGLU(nn.Module):
    hidden: int
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x):
        x12 = nn.Dense(2 * self.hidden, dtype=self.dtype, name="w12")(x)
        x1, x2 = jnp.split(x12, 2, axis=-1)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="w3")(nn.silu(x1) * x2)


class _Block(nn.Module):
    num_heads: int
    ffn: str
    mlp_ratio: float
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x):
        C = x.shape[-1]
        ln = functools.partial(nn.LayerNorm, epsilon=1e-6, dtype=jnp.float32)
        ls1 = self.param("ls1", nn.initializers.constant(1e-5), (C,))
        ls2 = self.param("ls2", nn.initializers.constant(1e-5), (C,))
        x = x + ls1 * _Attention(self.num_heads, self.dtype, name="attn")(ln(name="norm1")(x))
        if self.ffn == "swiglu":
            mlp = _SwiGLU(swiglu_hidden(C, self.mlp_ratio), self.dtype, name="mlp")
        else:
            mlp = _Mlp(int(C * self.mlp_ratio), self.dtype, name="mlp")
        return x + ls2 * mlp(ln(name="norm2")(x))


class DinoV2(nn.Module):
    """DINOv2 ViT returning patch features (B, H/p, W/p, D) of normalised NHWC images."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 14
    pos_grid: int = 37
    num_registers: int = 0
    ffn: str = "mlp"
    mlp_ratio: float = 4.0
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, images, layer: Optional[int] = None):
        B, H, W, _ = images.shape
        p, D = self.patch_size, self.embed_dim
        gh, gw = H // p, W // p
        x = nn.Conv(D, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="patch_embed")(
            images[:, : gh * p, : gw * p]
        )
        x = x.reshape(B, gh * gw, D).astype(jnp.float32)
        init = nn.initializers.normal(0.02)
        cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, D))
        pos = self.param("pos_embed", init, (1, 1 + self.pos_grid**2, D))
        x = jnp.concatenate([jnp.broadcast_to(cls, (B, 1, D)), x], axis=1)
        x = x + interpolate_pos_embed(pos, gh, gw)
        if self.num_registers:
            reg = self.param("register_tokens", init, (1, self.num_registers, D))
            x = jnp.concatenate([x[:, :1], jnp.broadcast_to(reg, (B, self.num_registers, D)), x[:, 1:]], 1)
        stop = self.depth if layer is None else layer
        if not 1 <= stop <= self.depth:
            raise ValueError(f"layer={layer}; expected 1..{self.depth}")
        for i in range(self.depth):
            if i >= stop:  # later blocks still get params so init always builds the full model
                if self.is_initializing():
                    _Block(self.num_heads, self.ffn, self.mlp_ratio, self.dtype, name=f"blocks_{i}")(x)
                continue
            x = _Block(self.num_heads, self.ffn, self.mlp_ratio, self.dtype, name=f"blocks_{i}")(x)
        x = nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32, name="norm")(x)
        return x[:, 1 + self.num_registers :].reshape(B, gh, gw, D)


# ----------------------------------------------------------------------------- conversion

_BLOCK_KEY = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")  # plain or block-chunked naming


def _strip_prefix(sd: dict) -> dict:
    for prefix in ("module.", "backbone.", "teacher.backbone."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def config_from_state_dict(sd: dict) -> dict:
    """DinoV2 constructor kwargs read off an official state dict's shapes."""
    sd = _strip_prefix(sd)
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"):
        if key not in sd:
            raise CheckpointError(f"not a DINOv2 state dict: key {key!r} missing (official facebookresearch/dinov2 naming expected)")
    D = sd["cls_token"].shape[-1]
    depth = 1 + max(int(_BLOCK_KEY.match(k).group(1)) for k in sd if _BLOCK_KEY.match(k))
    n_pos = sd["pos_embed"].shape[1] - 1
    grid = int(math.isqrt(n_pos))
    if grid * grid != n_pos:
        raise CheckpointError(f"DINOv2 pos_embed has {n_pos} patch positions; expected a square grid")
    swiglu = any(k.endswith("mlp.w12.weight") for k in sd)
    if swiglu:
        hidden = sd[next(k for k in sd if k.endswith("mlp.w12.weight"))].shape[0] // 2
        mlp_ratio = 4.0 if hidden == swiglu_hidden(D, 4.0) else hidden * 1.5 / D
    else:
        mlp_ratio = sd[next(k for k in sd if k.endswith("mlp.fc1.weight"))].shape[0] / D
    return dict(
        embed_dim=D,
        depth=depth,
        num_heads=max(1, D // 64),  # every official variant has head_dim 64
        patch_size=sd["patch_embed.proj.weight"].shape[-1],
        pos_grid=grid,
        num_registers=sd["register_tokens"].shape[1] if "register_tokens" in sd else 0,
        ffn="swiglu" if swiglu else "mlp",
        mlp_ratio=mlp_ratio,
    )


def _dense(sd, prefix):
    return {"kernel": np.asarray(sd[prefix + ".weight"], np.float32).T, "bias": np.asarray(sd[prefix + ".bias"], np.float32)}


def _ln(sd, prefix):
    return {"scale": np.asarray(sd[prefix + ".weight"], np.float32), "bias": np.asarray(sd[prefix + ".bias"], np.float32)}


def convert_state_dict(sd: dict) -> dict:
    """Official DINOv2 PyTorch state dict (numpy arrays) -> DinoV2 params (numpy)."""
    sd = _strip_prefix(dict(sd))
    cfg = config_from_state_dict(sd)
    blocks: dict[int, dict] = {}
    for key, value in sd.items():
        m = _BLOCK_KEY.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), {})[m.group(2)] = value
    try:
        w = np.asarray(sd["patch_embed.proj.weight"], np.float32)  # (D, 3, p, p) -> (p, p, 3, D)
        params = {
            "patch_embed": {"kernel": w.transpose(2, 3, 1, 0), "bias": np.asarray(sd["patch_embed.proj.bias"], np.float32)},
            "cls_token": np.asarray(sd["cls_token"], np.float32),
            "pos_embed": np.asarray(sd["pos_embed"], np.float32),
            "norm": _ln(sd, "norm"),
        }
        if cfg["num_registers"]:
            params["register_tokens"] = np.asarray(sd["register_tokens"], np.float32)
        for i in range(cfg["depth"]):
            b = blocks[i]
            mlp = ("w12", "w3") if cfg["ffn"] == "swiglu" else ("fc1", "fc2")
            params[f"blocks_{i}"] = {
                "norm1": _ln(b, "norm1"),
                "norm2": _ln(b, "norm2"),
                "attn": {"qkv": _dense(b, "attn.qkv"), "proj": _dense(b, "attn.proj")},
                "mlp": {name: _dense(b, f"mlp.{name}") for name in mlp},
                "ls1": np.asarray(b["ls1.gamma"], np.float32),
                "ls2": np.asarray(b["ls2.gamma"], np.float32),
            }
    except KeyError as e:
        raise CheckpointError(f"DINOv2 state dict lacks key {e.args[0]!r} (official naming expected)") from None
    return params


def load_dinov2(path):
    """(module, params) from an official DINOv2 .pth (e.g. dinov2_vitb14_pretrain.pth)."""
    sd = load_state_dict(path)
    return DinoV2(**config_from_state_dict(sd)), convert_state_dict(sd)
