"""VAR's multi-scale residual vector quantizer (NHWC, Flax Linen, always float32).

A feature map f (B, H, W, z) with H = W = patch_nums[-1] is coded as K token maps r_1..r_K of
sizes pn_k x pn_k, coarse to fine. At scale k the current residual is area-downsampled to
pn_k, each cell takes its nearest codebook entry, the code map is bicubic-upsampled back to
H x W, passed through Phi_k(h) = (1 - r) h + r conv3x3(h), added to f_hat and taken off the
residual. f_hat after K scales is what the decoder sees. Both resizes are PyTorch-exact
(resize.py), and the Phi a scale uses follows VAR's tick rule (`phi_index_table`), so VAR's
weights give VAR's tokens.

Everything here runs in float32 (VAR disables autocast in its quantizer): token choice by argmin
is sensitive to rounding, and the matmuls use HIGHEST precision so GPUs/TPUs do not round them
to bf16/tf32.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from earthmapper_jax.tokenizer.resize import area_resize, bicubic_resize
from earthmapper_jax.tokenizer.vqvae import CONV_INIT

_HI = jax.lax.Precision.HIGHEST


def num_phis(num_scales: int, share_quant_resi: int, default_qresi_counts: int = 0) -> int:
    """How many Phi convs VAR builds: one per scale (0), one shared (1), or `share_quant_resi`."""
    if share_quant_resi == 0:
        return default_qresi_counts or num_scales
    if share_quant_resi == 1:
        return 1
    return share_quant_resi


def phi_index_table(num_scales: int, share_quant_resi: int, default_qresi_counts: int = 0) -> tuple:
    """Index of the Phi conv each scale uses, by VAR's rule.

    Scale si sits at `at = si / (K - 1)`; VAR keeps n ticks (linspace(1/(3n), 1 - 1/(3n), n) for
    n == 4, else linspace(1/(2n), 1 - 1/(2n), n)) and takes the first nearest tick. This is the
    same float64 numpy arithmetic as VAR, which decides the exact ties (scales 2 and 7 of 10),
    giving (0,0,1,1,1,2,2,3,3,3) for the released 10-scale tokenizer.
    """
    n = num_phis(num_scales, share_quant_resi, default_qresi_counts)
    if share_quant_resi == 1:
        return (0,) * num_scales
    if n == 4:
        ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n)
    else:
        ticks = np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)
    if num_scales == 1:
        return (0,)
    return tuple(int(np.argmin(np.abs(ticks - si / (num_scales - 1)))) for si in range(num_scales))


def nearest_codes(z, codebook, using_znorm: bool = False):
    """Index of the nearest codebook row for each row of z (N, C): squared L2, or cosine."""
    z = z.astype(jnp.float32)
    if using_znorm:
        zn = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
        en = codebook / jnp.maximum(jnp.linalg.norm(codebook, axis=-1, keepdims=True), 1e-12)
        return jnp.argmax(jnp.matmul(zn, en.T, precision=_HI), axis=-1).astype(jnp.int32)
    # Same arithmetic as VAR: (|z|^2 + |e|^2) - 2 z.e, first index on ties.
    d = jnp.sum(z * z, axis=1, keepdims=True) + jnp.sum(codebook * codebook, axis=1)
    d = d - 2.0 * jnp.matmul(z, codebook.T, precision=_HI)
    return jnp.argmin(d, axis=-1).astype(jnp.int32)


class Phi(nn.Module):
    """Phi(h) = (1 - r) * h + r * conv3x3(h), r = |quant_resi|."""

    ratio: float

    @nn.compact
    def __call__(self, h):
        conv = nn.Conv(h.shape[-1], (3, 3), padding=((1, 1), (1, 1)), name="conv", **CONV_INIT)
        r = abs(self.ratio)
        return h * (1.0 - r) + conv(h) * r


class MultiScaleQuantizer(nn.Module):
    """VAR's VectorQuantizer2. Inputs/outputs are NHWC float32; token maps are (B, pn, pn) int32."""

    vocab_size: int
    z_channels: int
    patch_nums: Sequence[int]
    using_znorm: bool = False
    beta: float = 0.25
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    default_qresi_counts: int = 0
    codebook_init_scale: float = -1.0  # VAR's `eini` convention: <0 uniform +-|e|/V, >0 trunc-normal std

    def setup(self):
        v, e = self.vocab_size, self.codebook_init_scale
        if e > 0:
            init = nn.initializers.truncated_normal(stddev=e)
        elif e < 0:
            init = nn.initializers.uniform(scale=2 * abs(e) / v)
            init = _shifted(init, -abs(e) / v)
        else:
            init = nn.initializers.normal(stddev=1.0)  # torch nn.Embedding's default
        init = nn.with_logical_partitioning(init, ("codebook", None))
        self.codebook = self.param("codebook", init, (v, self.z_channels), jnp.float32)
        k = len(self.patch_nums)
        if abs(self.quant_resi) > 1e-6:
            n = num_phis(k, self.share_quant_resi, self.default_qresi_counts)
            self.phi = [Phi(self.quant_resi) for _ in range(n)]
        else:
            self.phi = []
        self.phi_table = phi_index_table(k, self.share_quant_resi, self.default_qresi_counts)

    # -- small pieces -------------------------------------------------------------------------

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def embed(self, idx):
        """Codebook rows of integer token maps: (B, h, w) -> (B, h, w, z) float32."""
        return jnp.take(self.codebook, idx, axis=0)

    def apply_phi(self, si: int, h, num_scales: int | None = None):
        """Phi of scale `si` (the table of `num_scales` scales, default this quantizer's)."""
        if not self.phi:
            return h
        k = num_scales or self.num_scales
        table = self.phi_table if k == self.num_scales else phi_index_table(
            k, self.share_quant_resi, self.default_qresi_counts
        )
        return self.phi[table[si]](h)

    def _lift(self, si: int, h):
        """Code map of scale si -> its contribution to f_hat (bicubic to full size, then Phi)."""
        full = self.patch_nums[-1]
        if si != self.num_scales - 1:
            h = bicubic_resize(h, full)
        return self.apply_phi(si, h)

    def _check_fmap(self, f):
        full = self.patch_nums[-1]
        # Tokenizer.check_images / check_fhat and the config check guarantee this.
        assert f.shape[1:] == (full, full, self.z_channels), (f.shape, full, self.z_channels)

    # -- tokenizing / detokenizing ------------------------------------------------------------

    def encode_to_indices(self, f):
        """f (B, H, W, z) -> list of K int32 token maps (B, pn, pn) (VAR's f_to_idxBl_or_fhat)."""
        indices, _ = self._residual_loop(jax.lax.stop_gradient(f.astype(jnp.float32)))
        return indices

    def encode_to_fhats(self, f):
        """f -> list of K cumulative f_hat maps (B, H, W, z), one after each scale."""
        _, fhats = self._residual_loop(jax.lax.stop_gradient(f.astype(jnp.float32)))
        return fhats

    def _residual_loop(self, f):
        self._check_fmap(f)
        b, hh, ww, c = f.shape
        f_rest, f_hat = f, jnp.zeros_like(f)
        indices, fhats = [], []
        for si, pn in enumerate(self.patch_nums):
            z = area_resize(f_rest, pn) if si != self.num_scales - 1 else f_rest
            idx = nearest_codes(z.reshape(-1, c), self.codebook, self.using_znorm).reshape(b, pn, pn)
            h = self._lift(si, self.embed(idx))
            f_hat = f_hat + h
            f_rest = f_rest - h
            indices.append(idx)
            fhats.append(f_hat)
        return indices, fhats

    def indices_to_fhat(self, indices):
        """Sum of the lifted code maps of the given (first k <= K) scales -> f_hat (B, H, W, z)."""
        full = self.patch_nums[-1]
        b = indices[0].shape[0]
        f_hat = jnp.zeros((b, full, full, self.z_channels), jnp.float32)
        for si, idx in enumerate(indices):
            f_hat = f_hat + self._lift(si, self.embed(idx))
        return f_hat

    def teacher_forcing_inputs(self, indices):
        """VAR's idxBl_to_var_input: (B, L - 1, z), L = sum pn^2.

        The input at the positions of scale k+1 is f_hat after scales 1..k, area-resized to
        pn_{k+1} and flattened row-major; the last scale's tokens are never an input.
        """
        full = self.patch_nums[-1]
        b = indices[0].shape[0]
        f_hat = jnp.zeros((b, full, full, self.z_channels), jnp.float32)
        outs = []
        for si in range(self.num_scales - 1):
            f_hat = f_hat + self.apply_phi(si, bicubic_resize(self.embed(indices[si]), full))
            pn = self.patch_nums[si + 1]
            outs.append(area_resize(f_hat, pn).reshape(b, pn * pn, self.z_channels))
        return jnp.concatenate(outs, axis=1)

    def next_autoregressive_input(self, si: int, num_scales: int, f_hat, h):
        """VAR's get_next_autoregressive_input: adds scale si's embedded codes h (B, pn, pn, z).

        Returns (f_hat, next_input): next_input is f_hat area-resized to the next scale's
        (B, pn', pn', z), or f_hat itself after the last scale.
        """
        full = self.patch_nums[-1]
        f_hat = f_hat.astype(jnp.float32)
        h = h.astype(jnp.float32)
        if si != num_scales - 1:
            f_hat = f_hat + self.apply_phi(si, bicubic_resize(h, full), num_scales)
            return f_hat, area_resize(f_hat, self.patch_nums[si + 1])
        f_hat = f_hat + self.apply_phi(si, h, num_scales)
        return f_hat, f_hat

    # -- training forward ---------------------------------------------------------------------

    def __call__(self, f):
        """Training forward (VAR's VectorQuantizer2.forward).

        Returns (f_hat_st, vq_loss, hits, indices):
        - f_hat_st: f_hat with the straight-through estimator (value f_hat, gradient to f);
        - vq_loss: mean over scales of beta * mse(sg(f_hat_k), f) + mse(f_hat_k, sg(f)), f_hat_k
          the cumulative f_hat after scale k (the codebook and Phi learn from the second term,
          the encoder from the first);
        - hits: (K, V) float32 code counts per scale;
        - indices: the K token maps.
        """
        f = f.astype(jnp.float32)
        self._check_fmap(f)
        f_ng = jax.lax.stop_gradient(f)
        b, hh, ww, c = f.shape
        # The residual only selects codes (argmin), so it needs no gradient.
        f_rest, f_hat = f_ng, jnp.zeros_like(f)
        loss = 0.0
        hits, indices = [], []
        for si, pn in enumerate(self.patch_nums):
            z = area_resize(f_rest, pn) if si != self.num_scales - 1 else f_rest
            idx = nearest_codes(
                z.reshape(-1, c), jax.lax.stop_gradient(self.codebook), self.using_znorm
            ).reshape(b, pn, pn)
            hits.append(jnp.bincount(idx.reshape(-1), length=self.vocab_size).astype(jnp.float32))
            h = self._lift(si, self.embed(idx))
            f_hat = f_hat + h
            f_rest = f_rest - jax.lax.stop_gradient(h)
            loss = loss + self.beta * jnp.mean(jnp.square(jax.lax.stop_gradient(f_hat) - f))
            loss = loss + jnp.mean(jnp.square(f_hat - f_ng))
            indices.append(idx)
        loss = loss / self.num_scales
        f_hat_st = jax.lax.stop_gradient(f_hat - f_ng) + f
        return f_hat_st, loss, jnp.stack(hits), indices


def _shifted(init, offset):
    def wrapped(key, shape, dtype=jnp.float32):
        return init(key, shape, dtype) + jnp.asarray(offset, dtype)

    return wrapped
