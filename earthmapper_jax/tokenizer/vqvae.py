"""VAR's convolutional VQ-VAE encoder and decoder (NHWC, Flax Linen).

The layout and every operator follow VAR's `basic_vae.py` (itself the latent-diffusion
"vq-f16" autoencoder) so that VAR's released weights load one-to-one:
- GroupNorm(32 groups, eps 1e-6) with the exact two-pass variance, SiLU;
- ResnetBlock: norm-SiLU-conv3x3 twice, 1x1 `nin_shortcut` only when the width changes;
- AttnBlock: single-head spatial attention with one fused q|k|v 1x1 projection, scale C^-0.5;
- Downsample: zero-pad right/bottom only, then a 3x3 stride-2 conv (SAME would pad both sides);
- Upsample: nearest x2, then a 3x3 conv.
Submodule names mirror VAR's state-dict keys (`down.2.block.0` -> `down_2_block_0`), see convert.py.

`dtype` is the compute dtype (e.g. bfloat16); parameters stay float32. Normalisation statistics
and the attention softmax are computed in float32 whatever `dtype` is.

Parameters carry logical axis names (train/sharding.py maps them to the mesh): conv kernels
CONV_AXES, the 1x1 convs that are Dense layers ("conv_in", "conv_out"), biases ("conv_out",),
GroupNorm scale/bias ("norm",). Block outputs carry the activation constraint ACT_AXES (a no-op
unless a mesh and `nn.logical_axis_rules` are active, as in the trainer).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# GroupNorm groups in every VAR norm layer; channel counts must be multiples of it.
NUM_GROUPS = 32

CONV_AXES = ("conv_h", "conv_w", "conv_in", "conv_out")
ACT_AXES = ("act_batch", None, None, "act_emb")  # NHWC feature maps
# Flax's default initialisers (LeCun normal kernels, zero biases, unit norm scales), named.
CONV_INIT = dict(
    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), CONV_AXES),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
)
DENSE_INIT = dict(  # the 1x1 convs that are Dense layers
    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                             ("conv_in", "conv_out")),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
)
NORM_INIT = dict(
    scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
)


def _conv(features, kernel, name, dtype, stride=1, padding=None):
    if padding is None:
        padding = ((kernel // 2, kernel // 2),) * 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        **CONV_INIT,
    )


def _norm(name, dtype):
    # use_fast_variance=False: E[(x-mean)^2] like PyTorch, not E[x^2]-mean^2 (which loses digits).
    return nn.GroupNorm(
        num_groups=NUM_GROUPS,
        epsilon=1e-6,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        name=name,
        **NORM_INIT,
    )


class ResnetBlock(nn.Module):
    out_channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = _conv(self.out_channels, 3, "conv1", self.dtype)(nn.silu(_norm("norm1", self.dtype)(x)))
        h = _conv(self.out_channels, 3, "conv2", self.dtype)(nn.silu(_norm("norm2", self.dtype)(h)))
        if x.shape[-1] != self.out_channels:
            x = nn.Dense(self.out_channels, dtype=self.dtype, name="nin_shortcut", **DENSE_INIT)(x)
        return nn.with_logical_constraint(x + h, ACT_AXES)


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions (used only at the lowest resolution)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c = x.shape
        h = _norm("norm", self.dtype)(x)
        qkv = nn.Dense(3 * c, dtype=self.dtype, name="qkv", **DENSE_INIT)(h)
        q, k, v = jnp.split(qkv.reshape(b, hh * ww, 3 * c), 3, axis=-1)  # channel order q | k | v
        logits = jnp.einsum("bqc,bkc->bqk", q, k).astype(jnp.float32) * (c**-0.5)
        w = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        h = jnp.einsum("bqk,bkc->bqc", w, v).reshape(b, hh, ww, c)
        h = nn.Dense(c, dtype=self.dtype, name="proj_out", **DENSE_INIT)(h)
        return nn.with_logical_constraint(x + h, ACT_AXES)


def downsample(x, name, dtype):
    """Right/bottom zero pad by one, then a 3x3 stride-2 VALID conv (VAR's Downsample2x)."""
    return _conv(x.shape[-1], 3, name, dtype, stride=2, padding=((0, 1), (0, 1)))(x)


def upsample(x, name, dtype):
    """Nearest-neighbour x2 then a 3x3 conv (VAR's Upsample2x)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
    return _conv(c, 3, name, dtype)(x)


class Encoder(nn.Module):
    """(B, H, W, 3) image -> (B, H/2^(L-1), W/2^(L-1), z_channels), L = len(ch_mult)."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    using_sa: bool = True
    using_mid_sa: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = self.dtype
        h = _conv(self.ch, 3, "conv_in", dt)(x.astype(dt))
        last = len(self.ch_mult) - 1
        for i, mult in enumerate(self.ch_mult):
            for j in range(self.num_res_blocks):
                h = ResnetBlock(self.ch * mult, dt, name=f"down_{i}_block_{j}")(h)
                if i == last and self.using_sa:
                    h = AttnBlock(dt, name=f"down_{i}_attn_{j}")(h)
            if i != last:
                h = downsample(h, f"down_{i}_downsample", dt)
        c = h.shape[-1]
        h = ResnetBlock(c, dt, name="mid_block_1")(h)
        if self.using_mid_sa:
            h = AttnBlock(dt, name="mid_attn_1")(h)
        h = ResnetBlock(c, dt, name="mid_block_2")(h)
        h = nn.silu(_norm("norm_out", dt)(h))
        return _conv(self.z_channels, 3, "conv_out", dt)(h)


class Decoder(nn.Module):
    """(B, h, w, z_channels) -> (B, h*2^(L-1), w*2^(L-1), 3), not clipped."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    z_channels: int
    using_sa: bool = True
    using_mid_sa: bool = True
    out_channels: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z):
        dt = self.dtype
        last = len(self.ch_mult) - 1
        c = self.ch * self.ch_mult[last]
        h = _conv(c, 3, "conv_in", dt)(z.astype(dt))
        h = ResnetBlock(c, dt, name="mid_block_1")(h)
        if self.using_mid_sa:
            h = AttnBlock(dt, name="mid_attn_1")(h)
        h = ResnetBlock(c, dt, name="mid_block_2")(h)
        # Levels run from the lowest resolution (index `last`) up to full resolution (index 0);
        # names keep VAR's level index, so `up_0` is the full-resolution level.
        for i in reversed(range(len(self.ch_mult))):
            for j in range(self.num_res_blocks + 1):
                h = ResnetBlock(self.ch * self.ch_mult[i], dt, name=f"up_{i}_block_{j}")(h)
                if i == last and self.using_sa:
                    h = AttnBlock(dt, name=f"up_{i}_attn_{j}")(h)
            if i != 0:
                h = upsample(h, f"up_{i}_upsample", dt)
        h = nn.silu(_norm("norm_out", dt)(h))
        return _conv(self.out_channels, 3, "conv_out", dt)(h)
