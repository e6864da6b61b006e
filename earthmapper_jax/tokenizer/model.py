"""The full multi-scale VQ-VAE: encoder -> quant_conv -> quantizer -> post_quant_conv -> decoder.

One Linen module whose methods are the tokenizer's operations; call them with
`model.apply({"params": params}, x, method=VQVAE.<name>)` (the `Tokenizer` object in
`__init__.py` wraps these in cached jitted functions). Images are NHWC in [-1, 1].
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from earthmapper_jax.tokenizer.config import model_config
from earthmapper_jax.tokenizer.quantizer import MultiScaleQuantizer
from earthmapper_jax.tokenizer.vqvae import CONV_INIT, Decoder, Encoder

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class VQVAE(nn.Module):
    cfg: Any  # a complete dict from config.model_config

    def setup(self):
        c = self.cfg
        dt = _DTYPES[c["dtype"]]
        common = dict(
            ch=c["ch"],
            ch_mult=tuple(c["ch_mult"]),
            num_res_blocks=c["num_res_blocks"],
            z_channels=c["z_channels"],
            using_sa=c["using_sa"],
            using_mid_sa=c["using_mid_sa"],
            dtype=dt,
        )
        self.encoder = Encoder(**common)
        self.decoder = Decoder(**common)
        ks = c["quant_conv_ks"]
        pad = ((ks // 2, ks // 2),) * 2
        z = c["z_channels"]
        self.quant_conv = nn.Conv(z, (ks, ks), padding=pad, dtype=dt, **CONV_INIT)
        self.post_quant_conv = nn.Conv(z, (ks, ks), padding=pad, dtype=dt, **CONV_INIT)
        self.quantize = MultiScaleQuantizer(
            vocab_size=c["vocab_size"],
            z_channels=c["z_channels"],
            patch_nums=tuple(c["patch_nums"]),
            using_znorm=c["using_znorm"],
            beta=c["beta"],
            quant_resi=c["quant_resi"],
            share_quant_resi=c["share_quant_resi"],
            default_qresi_counts=c["default_qresi_counts"],
            codebook_init_scale=c["codebook_init_scale"],
        )

    # -- images <-> features ------------------------------------------------------------------

    def encode_features(self, images):
        """Images (B, H, W, 3) -> continuous features f (B, h, w, z) float32 (before quantizing)."""
        return self.quant_conv(self.encoder(images)).astype(jnp.float32)

    def decode_fhat(self, f_hat, clip: bool = True):
        """f_hat (B, h, w, z) -> images (B, H, W, 3) float32, clipped to [-1, 1] like VAR."""
        x = self.decoder(self.post_quant_conv(f_hat.astype(self.decoder.dtype))).astype(jnp.float32)
        return jnp.clip(x, -1.0, 1.0) if clip else x

    # -- tokens -------------------------------------------------------------------------------

    def encode(self, images):
        """Images -> list of K int32 token maps (B, pn, pn) (VAR's img_to_idxBl)."""
        return self.quantize.encode_to_indices(self.encode_features(images))

    def decode(self, indices):
        """First k <= K token maps -> images (VAR's idxBl_to_img(last_one=True), clipped)."""
        return self.decode_fhat(self.quantize.indices_to_fhat(indices))

    def fhat(self, indices):
        return self.quantize.indices_to_fhat(indices)

    def embed(self, idx):
        return self.quantize.embed(idx)

    def teacher_forcing_inputs(self, indices):
        return self.quantize.teacher_forcing_inputs(indices)

    def next_autoregressive_input(self, si, num_scales, f_hat, h):
        return self.quantize.next_autoregressive_input(si, num_scales, f_hat, h)

    def reconstruct(self, images, num_scales=None):
        """Images -> reconstruction from the first `num_scales` scales (all by default), clipped."""
        fhats = self.quantize.encode_to_fhats(self.encode_features(images))
        return self.decode_fhat(fhats[(num_scales or len(fhats)) - 1])

    # -- training -----------------------------------------------------------------------------

    def __call__(self, images):
        """Training forward (VAR's VQVAE.forward): (rec unclipped, vq_loss, hits (K, V), indices)."""
        f = self.encode_features(images)
        f_hat, vq_loss, hits, indices = self.quantize(f)
        return self.decode_fhat(f_hat, clip=False), vq_loss, hits, indices


def build(cfg=None, **overrides) -> VQVAE:
    """VQVAE module from a (partial) tokenizer config dict."""
    return VQVAE(model_config(cfg, **overrides))
