"""VAR's PyTorch VQ-VAE state dict (`vae_ch160v4096z32.pth`) -> tokenizer params + config.

The architecture (ch, ch_mult, num_res_blocks, z, V, attention, Phi sharing) is read off the
tensor shapes; image size and patch_nums are not in the file and come from the caller (VAR's
256 px or 512 px scale sets by default). Every tensor must be used exactly once and fit
(CheckpointError naming the key otherwise); only the usage buffer `quantize.ema_vocab_hit_SV`
is dropped (training statistics; its first dimension is VAR's number of scales).

Key mapping (PyTorch NCHW/OIHW -> Flax NHWC/HWIO; {i} level, {j} block, {k} Phi index):

| VAR key                                             | Flax param path                          |
| --------------------------------------------------- | ---------------------------------------- |
| {encoder,decoder}.conv_in / conv_out .weight        | .../conv_in / conv_out / kernel  (HWIO)  |
| encoder.down.{i}.block.{j}.{norm1,norm2}.weight     | encoder/down_{i}_block_{j}/norm1/scale   |
| encoder.down.{i}.block.{j}.{conv1,conv2}.weight     | encoder/down_{i}_block_{j}/conv1/kernel  |
| encoder.down.{i}.block.{j}.nin_shortcut.weight      | .../nin_shortcut/kernel (1x1 -> Dense)   |
| encoder.down.{i}.attn.{j}.{norm,qkv,proj_out}       | encoder/down_{i}_attn_{j}/... (qkv Dense)|
| encoder.down.{i}.downsample.conv.weight             | encoder/down_{i}_downsample/kernel       |
| {encoder,decoder}.mid.{block_1,attn_1,block_2}      | .../mid_block_1, mid_attn_1, mid_block_2 |
| {encoder,decoder}.norm_out.weight                   | .../norm_out/scale                       |
| decoder.up.{i}.block.{j} / attn.{j}                 | decoder/up_{i}_block_{j} / up_{i}_attn_{j}|
| decoder.up.{i}.upsample.conv.weight                 | decoder/up_{i}_upsample/kernel           |
| quant_conv / post_quant_conv .weight                | quant_conv / post_quant_conv / kernel    |
| quantize.embedding.weight  (V, z)                   | quantize/codebook  (V, z)                |
| quantize.quant_resi.qresi_ls.{k}  (share >= 2)      | quantize/phi_{k}/conv                    |
| quantize.quant_resi.qresi         (share == 1)      | quantize/phi_0/conv                      |
| quantize.quant_resi.{k}           (share == 0)      | quantize/phi_{k}/conv                    |
| quantize.ema_vocab_hit_SV                           | (dropped)                                |
Every `.bias` maps to `bias`. Conv weights [O,I,kh,kw] -> [kh,kw,I,O]; 1x1 convs that became
Dense layers (qkv, proj_out, nin_shortcut) [O,I,1,1] -> [I,O]; GroupNorm weight -> scale.
"""

from __future__ import annotations

import re

import jax
import numpy as np

from earthmapper_jax.errors import CheckpointError, InputError
from earthmapper_jax.io.checkpoint import save_params
from earthmapper_jax.io.pth import load_state_dict
from earthmapper_jax.tokenizer import CHECKPOINT_KIND, param_shapes
from earthmapper_jax.tokenizer.config import PATCH_NUMS_256, PATCH_NUMS_512, model_config

IGNORED_KEYS = ("quantize.ema_vocab_hit_SV",)
_DEFAULT_PATCH_NUMS = {256: PATCH_NUMS_256, 512: PATCH_NUMS_512}
_NORMS = ("norm", "norm1", "norm2", "norm_out")
_MODULE_RENAMES = [  # Flax module name -> VAR module path
    (re.compile(r"^(down|up)_(\d+)_(block|attn)_(\d+)$"), r"\1.\2.\3.\4"),
    (re.compile(r"^(down|up)_(\d+)_(downsample|upsample)$"), r"\1.\2.\3.conv"),
    (re.compile(r"^mid_(block_1|block_2|attn_1)$"), r"mid.\1"),
]


def torch_key(path: tuple, share_quant_resi: int) -> str:
    """VAR state-dict key of the Flax param at `path` (tuple of names)."""
    *mods, leaf = path
    if mods == ["quantize"] and leaf == "codebook":
        return "quantize.embedding.weight"
    parts = []
    for m in mods:
        if m.startswith("phi_") and parts == ["quantize"]:
            k = m[len("phi_"):]
            parts.append({0: f"quant_resi.{k}", 1: "quant_resi.qresi"}.get(
                share_quant_resi, f"quant_resi.qresi_ls.{k}"))
            continue
        if m == "conv" and parts and parts[-1].startswith("quant_resi"):
            continue  # Phi *is* the conv in VAR (a Conv2d subclass)
        for pattern, repl in _MODULE_RENAMES:
            if pattern.match(m):
                m = pattern.sub(repl, m)
                break
        parts.append(m)
    name = "bias" if leaf == "bias" else "weight"
    return ".".join(parts + [name])


def _to_flax(arr: np.ndarray, want_shape: tuple, key: str) -> np.ndarray:
    a = np.asarray(arr, np.float32)
    if len(want_shape) == 4 and a.ndim == 4:  # conv OIHW -> HWIO
        a = a.transpose(2, 3, 1, 0)
    elif len(want_shape) == 2 and a.ndim == 4 and a.shape[2:] == (1, 1) and not key.endswith(
            "embedding.weight"):  # 1x1 conv -> Dense [in, out]
        a = a[:, :, 0, 0].T
    if a.shape != tuple(want_shape):
        raise CheckpointError(
            f"{key}: shape {tuple(arr.shape)} does not fit the architecture read from the other "
            f"tensors (expects {tuple(want_shape)} in Flax layout)")
    return np.ascontiguousarray(a)


def infer_architecture(sd: dict, where: str = "checkpoint") -> dict:
    """Tokenizer config fields readable from the tensor shapes of a VAR VQ-VAE state dict."""

    def need(key):
        if key not in sd:
            raise CheckpointError(f"{where}: not a VAR VQ-VAE state dict (no key {key})")
        return sd[key]

    ch = int(need("encoder.conv_in.weight").shape[0])
    vocab, z = (int(d) for d in need("quantize.embedding.weight").shape)
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(f"{where}: encoder.down.* levels {levels} are not 0..n-1")
    ch_mult = []
    for i in levels:
        out_ch = int(need(f"encoder.down.{i}.block.0.conv1.weight").shape[0])
        if out_ch % ch:
            raise CheckpointError(
                f"{where}: encoder.down.{i}.block.0.conv1.weight has {out_ch} output channels, "
                f"not a multiple of ch={ch}")
        ch_mult.append(out_ch // ch)
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    last = levels[-1]
    phi_ls = {int(m.group(1)) for k in sd
              if (m := re.match(r"quantize\.quant_resi\.qresi_ls\.(\d+)\.weight$", k))}
    phi_ns = {int(m.group(1)) for k in sd
              if (m := re.match(r"quantize\.quant_resi\.(\d+)\.weight$", k))}
    if phi_ls:
        share, counts, quant_resi = len(phi_ls), 0, 0.5
    elif "quantize.quant_resi.qresi.weight" in sd:
        share, counts, quant_resi = 1, 0, 0.5
    elif phi_ns:
        share, counts, quant_resi = 0, len(phi_ns), 0.5
    else:  # quant_resi == 0: VAR uses identities, no Phi weights
        share, counts, quant_resi = 4, 0, 0.0
    return dict(
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=len(blocks),
        z_channels=z,
        vocab_size=vocab,
        using_sa=f"encoder.down.{last}.attn.0.qkv.weight" in sd,
        using_mid_sa="encoder.mid.attn_1.qkv.weight" in sd,
        quant_conv_ks=int(need("quant_conv.weight").shape[-1]),
        quant_resi=quant_resi,
        share_quant_resi=share,
        default_qresi_counts=counts,
    )


def convert_state_dict(sd: dict, *, image_size: int = 256, patch_nums=None,
                       where: str = "checkpoint"):
    """(params, config) for a VAR VQ-VAE state dict {key: array}."""
    if patch_nums is None:
        if image_size not in _DEFAULT_PATCH_NUMS:
            raise InputError(
                f"no default patch_nums for image size {image_size} (VAR has 256 and 512); "
                "pass patch_nums, e.g. --patch-nums 1,2,3,4,6,8")
        patch_nums = _DEFAULT_PATCH_NUMS[image_size]
    cfg = model_config(infer_architecture(sd, where), image_size=int(image_size),
                       patch_nums=tuple(patch_nums))
    shapes = param_shapes(cfg)
    used = set()

    def fill(path, want):
        names = tuple(p.key for p in path)
        key = torch_key(names, cfg["share_quant_resi"])
        if key not in sd:
            raise CheckpointError(f"{where}: missing key {key} (needed for {'/'.join(names)})")
        used.add(key)
        return _to_flax(sd[key], want.shape, key)

    params = jax.tree_util.tree_map_with_path(fill, shapes)
    extra = sorted(set(sd) - used - set(IGNORED_KEYS))
    if extra:
        raise CheckpointError(
            f"{where}: unexpected key {extra[0]} ({len(extra)} unused tensors; another architecture?)")
    return params, cfg


def convert_var_vae(src, dst, *, image_size: int = 256, patch_nums=None,
                    overwrite: bool = False):
    """Reads VAR's VQ-VAE .pth at `src`, writes a tokenizer directory `dst`; returns its config."""
    sd = load_state_dict(src)
    params, cfg = convert_state_dict(sd, image_size=image_size, patch_nums=patch_nums,
                                     where=str(src))
    save_params(dst, params, cfg, kind=CHECKPOINT_KIND, overwrite=overwrite,
                meta={"source": str(src), "converted_from": "VAR VQVAE state_dict"})
    return cfg
