"""Semantic Infusion (SI, EarthMapper §IV-E): align transformer hidden states with DINOv2 features.

Targets (config `si_target`), per modality (the satellite half aligns to satellite features,
the map half to map features), as (B, Σpn², D) rows in the half's token order:
  "reconstruction" (the paper, Eq. 13's E_sem(r_k)): the image decoded from the cumulative
      tokens of scales 1..k (the tokenizer's f_hat after scale k), its DINOv2 patch grid
      (224², 16×16 for ViT-*/14) area-resized to h_k×w_k (`reconstruction_targets`). K decodes
      and K DINOv2 passes per image: precompute them (`earthmapper prepare tokens
      --si-dinov2`), or let training compute them on the fly from the tokens.
  "image" (cheaper, not the paper): the DINOv2 grid of the real image, area-resized to each
      scale (`targets_from_grid`); one pass per image, stored as the (g, g, D) grid.
Resizing is PyTorch 'area' (the tokenizer's exact matrices).

Alignment network A: a 3-layer MLP (Dense-SiLU-Dense-SiLU-Dense, REPA's projector shape) on the
hidden states after block `layer` (1-based) of the transformer, applied per token; the position
of scale k holds the inputs r_<k, so A(h_k) predicts E_sem(r_k) from r_<k as Eq. 12 writes.

Loss (Eq. 13, L_sem = 1/K Σ_k ||A(F(r_<k, c_g)) - E_sem(r_k)||²₂), config `si_loss`:
  "sqnorm" (default, the paper): per position the squared L2 norm of the error, summed over
      the D feature dimensions; averaged over the h_k·w_k positions of scale k, then 1/K over
      the scales, then over the batch and the two halves. The literal norm over the whole
      h_k×w_k×D map would weigh scale k by h_k·w_k more (the 16×16 scale 256× the 1×1 one);
      we read the 1/K as "each scale counts once" and average over positions. So σ = 0.5
      multiplies the paper's per-position squared norm: L = L_jot + 0.5 · L_sem (Eq. 14).
  "mse": the same divided by D (mean over features; σ then weighs D× less than the paper's).
  "cosine": 1 - cosine similarity (REPA's, scale-free).
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

SI_LOSSES = ("sqnorm", "mse", "cosine")
SI_TARGETS = ("reconstruction", "image")
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


def reconstruction_targets(tok_module, tok_params, indices, dino_module, dino_params,
                           patch_nums: Sequence[int], size: int = 224):
    """The paper's E_sem(r_k): for each scale k the DINOv2 grid of the image decoded from the
    token maps of scales 1..k, area-resized to pn_k×pn_k. indices: K maps (B, pn, pn).
    Returns (B, Σpn², D) fp32 (no gradient)."""
    out = []
    for k, pn in enumerate(patch_nums):
        img = tok_module.apply({"params": tok_params}, list(indices[: k + 1]), method="decode")
        grid = dinov2_grid(dino_module, dino_params, img, size)
        out.append(area_resize(grid, pn).reshape(grid.shape[0], pn * pn, grid.shape[-1]))
    return jax.lax.stop_gradient(jnp.concatenate(out, 1))


def as_targets(stored, patch_nums: Sequence[int]):
    """Stored SI targets -> (B, Σpn², D): an image grid (B, g, g, D) is resized per scale,
    per-scale rows (B, Σpn², D) (reconstruction targets) pass through."""
    stored = jnp.asarray(stored, jnp.float32)
    return targets_from_grid(stored, patch_nums) if stored.ndim == 4 else stored


def per_token_loss(pred, target, kind: str = "sqnorm"):
    """(..., D) x (..., D) -> (...): squared L2 norm of the error ("sqnorm"), its mean over D
    ("mse"), or 1 - cosine similarity."""
    assert kind in SI_LOSSES, kind  # validated by the model config check (si_loss)
    pred, target = pred.astype(jnp.float32), target.astype(jnp.float32)
    if kind == "sqnorm":
        return jnp.sum(jnp.square(pred - target), axis=-1)
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
