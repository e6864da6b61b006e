"""pix2pix (Isola et al. 2017): the U-Net generator and the conditional 70×70 PatchGAN, Linen.

The baseline the EarthMapper paper compares against (its Table I), written from the paper's
description. One model translates one direction (`direction`: "sat2map" | "map2sat").

Generator: an encoder of 4×4 stride-2 convolutions C64-C128-C256-C512-C512-... (width
ngf·min(2^i, 8)) down to a 1×1 bottleneck, so the depth is log2(image_size): 6 levels at 64 px,
8 at 256 px (the paper's). The decoder mirrors it with 4×4 stride-2 transposed convolutions and
concatenates the encoder's output of the same resolution (the U-Net skips); the first
`num_dropout` (3) decoder blocks apply dropout 0.5, which the paper keeps on at test time as
its only noise. Encoder blocks are Conv-Norm-LeakyReLU(0.2), decoder blocks
ConvT-Norm-Dropout-ReLU, the last layer ConvT → 3 channels → tanh. No norm on the first
encoder block (as the paper) nor on the 1×1 bottleneck (normalising one value per channel
would zero it).

Norm: InstanceNorm. pix2pix trains at batch 1 and runs BatchNorm in training mode at test time,
which at batch 1 *is* instance normalisation; InstanceNorm keeps exactly that at any batch size
and keeps the model a pure function of its params (no running statistics in the train state).

Discriminator: conditional PatchGAN on source ⊕ target (6 channels): C64 (no norm) - C128 -
C256 stride 2, C512 stride 1, then a 4×4 convolution to one logit per patch; with the default
3 layers each logit sees 70×70 pixels. LeakyReLU 0.2, InstanceNorm.

Weights start from N(0, 0.02) like the paper's; every parameter carries the tokenizer's
convolution axis names (train/sharding.py maps them), norm parameters ("norm",).

    model_config(config) -> dict   defaults filled in, checked (InputError)
    fields(config) -> dict         defaults filled in (for code past the check)
    build(config) -> Generator      (models/loading.py MODES["pix2pix"])
    Generator(...)(x, train)        (B, S, S, 3) in [-1, 1] -> (B, S, S, 3) in (-1, 1)
    PatchGAN(...)(source, target)   -> (B, h, w, 1) fp32 logits
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from earthmapper_jax.errors import InputError
from earthmapper_jax.tokenizer.vqvae import CONV_AXES, NORM_INIT

DIRECTIONS = ("sat2map", "map2sat")

DEFAULTS = dict(
    mode="pix2pix",
    direction="sat2map",
    image_size=256,
    ngf=64,            # generator width of the first encoder block
    ndf=64,            # discriminator width of its first block
    disc_layers=3,     # 3: the 70×70 PatchGAN
    dropout=0.5,
    num_dropout=3,     # decoder blocks with dropout, deepest first
    test_dropout=True,  # the paper's test-time dropout (translate's default)
    dtype="float32",
)

_KERNEL = nn.with_logical_partitioning(nn.initializers.normal(0.02), CONV_AXES)
_BIAS = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",))
_PAD1 = ((1, 1), (1, 1))  # 4×4 stride 2 with one pixel of padding halves the size exactly
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def fields(config=None) -> dict:
    """DEFAULTS updated by `config` (dict or ConfigDict), unchecked."""
    c = dict(DEFAULTS)
    if config is not None:
        c.update(config.to_dict() if hasattr(config, "to_dict") else dict(config))
    return c


def model_config(config=None) -> dict:
    """`fields(config)`, checked (where a config enters); InputError names the field."""
    c = fields(config)
    if c["direction"] not in DIRECTIONS:
        raise InputError(f"config.model.direction={c['direction']!r}; expected one of {DIRECTIONS}")
    s = int(c["image_size"])
    if s < 8 or s & (s - 1):
        raise InputError(f"config.model.image_size={s}; expected a power of two >= 8")
    if c["dtype"] not in _DTYPES:
        raise InputError(f"config.model.dtype={c['dtype']!r}; expected one of {sorted(_DTYPES)}")
    if not 0 <= float(c["dropout"]) < 1:
        raise InputError(f"config.model.dropout={c['dropout']}; expected a probability in [0, 1)")
    for key in ("ngf", "ndf", "disc_layers"):
        if int(c[key]) < 1:
            raise InputError(f"config.model.{key}={c[key]}; expected a positive integer")
    return c


def levels(image_size: int) -> int:
    """Encoder depth: stride-2 blocks down to a 1×1 bottleneck."""
    return int(math.log2(int(image_size)))


def _conv(width, stride, name, dtype):
    return nn.Conv(width, (4, 4), strides=(stride, stride), padding=_PAD1, dtype=dtype,
                   kernel_init=_KERNEL, bias_init=_BIAS, name=name)


def _norm(name, dtype):
    return nn.InstanceNorm(epsilon=1e-5, dtype=dtype, use_fast_variance=False, name=name,
                           **NORM_INIT)


class Generator(nn.Module):
    image_size: int = 256
    ngf: int = 64
    dropout: float = 0.5
    num_dropout: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = levels(self.image_size)
        widths = [self.ngf * min(2 ** i, 8) for i in range(n)]
        h = x.astype(self.dtype)
        skips = []
        for i, w in enumerate(widths):
            h = _conv(w, 2, f"enc_{i}", self.dtype)(h)
            if 0 < i < n - 1:
                h = _norm(f"enc_norm_{i}", self.dtype)(h)
            h = nn.relu(h) if i == n - 1 else nn.leaky_relu(h, 0.2)
            skips.append(h)
        for j, i in enumerate(range(n - 2, -1, -1)):  # deepest decoder block first
            h = nn.ConvTranspose(widths[i], (4, 4), strides=(2, 2), padding="SAME",
                                 dtype=self.dtype, kernel_init=_KERNEL, bias_init=_BIAS,
                                 name=f"dec_{i}")(h)
            h = _norm(f"dec_norm_{i}", self.dtype)(h)
            if j < self.num_dropout and self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
            h = jnp.concatenate([nn.relu(h), skips[i]], axis=-1)
        h = nn.ConvTranspose(3, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                             kernel_init=_KERNEL, bias_init=_BIAS, name="out")(h)
        return jnp.tanh(h.astype(jnp.float32))


class PatchGAN(nn.Module):
    ndf: int = 64
    num_layers: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, source, target):
        h = jnp.concatenate([source, target], axis=-1).astype(self.dtype)
        h = nn.leaky_relu(_conv(self.ndf, 2, "conv_0", self.dtype)(h), 0.2)
        for k in range(1, self.num_layers + 1):
            w = self.ndf * min(2 ** k, 8)
            h = _conv(w, 2 if k < self.num_layers else 1, f"conv_{k}", self.dtype)(h)
            h = nn.leaky_relu(_norm(f"norm_{k}", self.dtype)(h), 0.2)
        return _conv(1, 1, "conv_out", self.dtype)(h).astype(jnp.float32)


def build(config) -> Generator:
    c = fields(config)
    return Generator(image_size=int(c["image_size"]), ngf=int(c["ngf"]),
                     dropout=float(c["dropout"]), num_dropout=int(c["num_dropout"]),
                     dtype=_DTYPES[c["dtype"]])


def build_discriminator(config) -> PatchGAN:
    c = fields(config)
    return PatchGAN(ndf=int(c["ndf"]), num_layers=int(c["disc_layers"]), dtype=_DTYPES[c["dtype"]])


def logits(model, cond, indices):
    """`Model.logits` of the other modes: a pix2pix model has no tokens."""
    raise InputError("a pix2pix model translates images; it has no token logits")
