"""PatchGAN discriminator (pix2pix / VQGAN style) for the optional adversarial tokenizer loss.

conv4x4/2 + LeakyReLU, then `num_layers - 1` more stride-2 and one stride-1 conv4x4 with
doubling widths (capped at 8x), each GroupNorm + LeakyReLU(0.2), then conv4x4 -> one logit per
patch. GroupNorm replaces pix2pix's BatchNorm so the model stays a pure function of its params.
Parameters carry the tokenizer's logical axis names (vqvae.CONV_INIT / NORM_INIT).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from earthmapper_jax.tokenizer.vqvae import CONV_INIT, NORM_INIT


class PatchDiscriminator(nn.Module):
    ch: int = 64
    num_layers: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        def conv(h, width, stride, name):
            return nn.Conv(width, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)),
                           dtype=self.dtype, name=name, **CONV_INIT)(h)

        h = nn.leaky_relu(conv(x.astype(self.dtype), self.ch, 2, "conv_0"), 0.2)
        for n in range(1, self.num_layers + 1):
            width = self.ch * min(2**n, 8)
            h = conv(h, width, 2 if n < self.num_layers else 1, f"conv_{n}")
            groups = 32 if width % 32 == 0 else 1
            h = nn.GroupNorm(groups, dtype=self.dtype, name=f"norm_{n}", **NORM_INIT)(h)
            h = nn.leaky_relu(h, 0.2)
        return conv(h, 1, 1, "conv_out").astype(jnp.float32)


def hinge_d_loss(logits_real, logits_fake):
    return 0.5 * (jnp.mean(nn.relu(1.0 - logits_real)) + jnp.mean(nn.relu(1.0 + logits_fake)))


def hinge_g_loss(logits_fake):
    return -jnp.mean(logits_fake)
