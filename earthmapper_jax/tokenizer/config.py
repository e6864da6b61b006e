"""Tokenizer hyper-parameters: defaults (VAR's released `vae_ch160v4096z32`), checks, shapes.

A tokenizer config is a flat dict (stored as config.json beside the params); `model_config`
fills in defaults, normalises lists to tuples and raises InputError for impossible settings.
"""

from earthmapper_jax.errors import InputError

# VAR's patch_nums for its two released resolutions (the same VAE serves both).
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)

DEFAULTS = dict(
    ch=160,
    ch_mult=(1, 1, 2, 2, 4),
    num_res_blocks=2,
    z_channels=32,
    vocab_size=4096,
    using_sa=True,
    using_mid_sa=True,
    using_znorm=False,
    beta=0.25,
    quant_conv_ks=3,
    quant_resi=0.5,
    share_quant_resi=4,
    default_qresi_counts=0,
    patch_nums=PATCH_NUMS_256,
    image_size=256,
    codebook_init_scale=-1.0,
    dtype="float32",  # compute dtype of the convolutions; params and the quantizer stay float32
)

_TUPLE_KEYS = ("ch_mult", "patch_nums")


def downsample_factor(cfg) -> int:
    return 2 ** (len(cfg["ch_mult"]) - 1)


def model_config(cfg=None, **overrides) -> dict:
    """Returns a complete, checked tokenizer config dict from a partial one (dict/ConfigDict)."""
    out = dict(DEFAULTS)
    if cfg is not None:
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        unknown = sorted(set(cfg) - set(DEFAULTS))
        if unknown:
            raise InputError(f"unknown tokenizer config keys {unknown}; expected some of {sorted(DEFAULTS)}")
        out.update(cfg)
    out.update(overrides)
    for k in _TUPLE_KEYS:
        out[k] = tuple(int(v) for v in out[k])
    validate(out)
    return out


def validate(cfg) -> None:
    """Raises InputError (one line) if the settings cannot form a VAR tokenizer."""
    pn = cfg["patch_nums"]
    if len(pn) < 1 or any(p < 1 for p in pn):
        raise InputError(f"patch_nums must be positive integers, got {list(pn)}")
    f = downsample_factor(cfg)
    if cfg["image_size"] % f:
        raise InputError(
            f"image_size {cfg['image_size']} is not a multiple of the downsampling factor {f} "
            f"(2^(len(ch_mult)-1), ch_mult={list(cfg['ch_mult'])})"
        )
    latent = cfg["image_size"] // f
    if pn[-1] != latent:
        raise InputError(
            f"last patch_num {pn[-1]} must equal the latent size {latent} "
            f"(image_size {cfg['image_size']} / {f})"
        )
    if any(p > latent for p in pn):
        raise InputError(f"patch_nums {list(pn)} exceed the latent size {latent}")
    if any(cfg["ch"] * m % 32 for m in cfg["ch_mult"]):
        raise InputError(
            f"every ch * ch_mult must be a multiple of 32 (GroupNorm groups), "
            f"got ch={cfg['ch']} ch_mult={list(cfg['ch_mult'])}"
        )
    if cfg["quant_conv_ks"] % 2 != 1:
        raise InputError(f"quant_conv_ks must be odd, got {cfg['quant_conv_ks']}")
    if cfg["dtype"] not in ("float32", "bfloat16", "float16"):
        raise InputError(f"dtype must be float32, bfloat16 or float16, got {cfg['dtype']!r}")
