"""Semantic Infusion (SI, EarthMapper §IV-E): align transformer hidden states with DINOv2 features.

Targets. The paper's E_sem(r_k) is DINOv2 applied to images decoded from the scale-k tokens;
that needs K decodes and K DINOv2 passes per image and step. We use instead
the DINOv2 patch features of the *real* image (224², a 16×16 patch grid for ViT-*/14),
area-resized (PyTorch 'area', the tokenizer's exact matrices) to each scale's pn×pn grid. They
do not depend on the model, so they can be computed once per dataset (`precompute_grids`) and
stored as the (g, g, D) grid per image; the per-scale pooling is done on the fly.
Each modality has its own targets: the satellite half aligns to the satellite image's features,
the map half to the map's.

Alignment network A: a 3-layer MLP (Dense-SiLU-Dense-SiLU-Dense, REPA's projector shape) on the
hidden states after block `layer` (1-based) of the transformer, applied per token.

Loss (paper Eq. 13, L_sem = 1/K Σ_k ||A(h_k) - E_sem(r_k)||²): per token the squared error
averaged over the feature dimension ("mse", the paper's choice and our default) or the negative
cosine similarity ("cosine", REPA's, scale-free); averaged over the tokens of each scale, then
over scales (the 1/K Σ_k of Eq. 13, so the 1×1 scale weighs as much as the 16×16 one), then
over the modalities. Total loss L = L_jot + σ L_sem with σ = 0.5 (§V-B).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.models.dinov2 import preprocess
from earthmapper_jax.progress import progress as progress_bar
from earthmapper_jax.tokenizer.resize import area_resize

SI_LOSSES = ("mse", "cosine")
DEFAULT_WEIGHT = 0.5  # σ of the paper


class AlignmentMLP(nn.Module):
    """A: hidden (..., C) -> semantic space (..., out_dim)."""

    hidden: int
    out_dim: int

    @nn.compact
    def __call__(self, h):
        h = h.astype(jnp.float32)
        h = nn.silu(nn.Dense(self.hidden, kernel_init=_named("embed", "mlp"),
                             bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                             name="fc1")(h))
        h = nn.silu(nn.Dense(self.hidden, kernel_init=_named("mlp", "embed"), name="fc2")(h))
        return nn.Dense(self.out_dim, kernel_init=_named("embed", None), name="fc3")(h)


def _named(*names):
    """Flax's default Dense kernel init, carrying logical axis names (train/sharding.py)."""
    return nn.with_logical_partitioning(nn.initializers.lecun_normal(), names)


def dinov2_grid(dino_module, dino_params, images, size: int = 224):
    """[-1, 1] NHWC images -> DINOv2 patch-feature grid (B, size/p, size/p, D), fp32, no grad."""
    feats = dino_module.apply({"params": dino_params}, preprocess(images, size))
    return jax.lax.stop_gradient(feats.astype(jnp.float32))


def targets_from_grid(grid, patch_nums: Sequence[int]):
    """(B, g, g, D) feature grid -> (B, Σ pn², D): area-resized to every scale, row-major."""
    grid = jnp.asarray(grid, jnp.float32)
    B, D = grid.shape[0], grid.shape[-1]
    return jnp.concatenate([area_resize(grid, pn).reshape(B, pn * pn, D) for pn in patch_nums], 1)


def per_token_loss(pred, target, kind: str = "mse"):
    """(..., D) x (..., D) -> (...): mean squared error over D, or 1 - cosine similarity."""
    assert kind in SI_LOSSES, kind  # validated by the model config check (si_loss)
    pred, target = pred.astype(jnp.float32), target.astype(jnp.float32)
    if kind == "mse":
        return jnp.mean(jnp.square(pred - target), axis=-1)
    num = jnp.sum(pred * target, -1)
    den = jnp.linalg.norm(pred, axis=-1) * jnp.linalg.norm(target, axis=-1)
    return 1.0 - num / jnp.maximum(den, 1e-6)


def scale_mean(per_token, scale_of_token: np.ndarray, num_scales: int, weight=None):
    """Mean over the tokens of each scale, then over scales: (B, n) -> scalar (and (K,) per scale).
    weight: optional (B, n) 0/1 mask of tokens that count (e.g. samples whose half is dropped)."""
    onehot = jnp.asarray(np.eye(num_scales, dtype=np.float32)[scale_of_token])  # (n, K)
    w = jnp.ones_like(per_token) if weight is None else weight.astype(jnp.float32)
    per_scale = jnp.einsum("bn,nk->k", per_token * w, onehot) / jnp.maximum(
        jnp.einsum("bn,nk->k", w, onehot), 1.0)
    return jnp.mean(per_scale), per_scale


def precompute_grids(images, dino_module, dino_params, *, batch_size: int = 32, size: int = 224,
                     dtype=np.float16, progress: bool = True) -> np.ndarray:
    """DINOv2 grids for an array or iterable of [-1, 1] NHWC images, once per dataset.

    Returns (N, g, g, D) numpy in `dtype` (fp16 halves the storage; the targets are regression
    targets, fp16's 3 significant digits are plenty). Store them beside the token shards.
    """
    fn = jax.jit(lambda p, x: dinov2_grid(dino_module, p, x, size))
    images = np.asarray(images)
    out = []
    with progress_bar(len(images), desc="DINOv2 targets", unit="image", enabled=progress) as bar:
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            out.append(np.asarray(fn(dino_params, jnp.asarray(chunk))).astype(dtype))
            bar.update(len(chunk))
    return np.concatenate(out, axis=0)
