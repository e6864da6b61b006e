"""EarthMapper model + sampling configs (the training fields live in configs/earthmapper_train.py).

    get_config("d24")   the paper: depth 24 (VAR-d24 shapes, init from VAR-d24), 256², 10 scales
    get_config("d16")   depth 16 (VAR-d16); also "d20", "d30"
    get_config("ny")    d24 for the pix2pix New York maps: no coordinates (every tile uses the
                        learned null), the paper's New York guidance triples
    get_config("tiny")  CPU tests / demo: depth 2, width 128, 6 scales (the 128 px tiny tokenizer)

config.model: the model fields (models/earthmapper.py `model_config`; saved with every model
directory). Defaults are the paper's model. The GJSA-specific ones:
    within_scale     "all" (default, the paper's Eq. 10: scale k sees both halves of scales < k;
                     the halves exchange no scale-k tokens) | "group" (the halves of a scale do
                     not attend to each other) | "ordered"
    directed_rate    0 (default, the paper's pure joint model) | p: share of training rows
                     trained as translations (the project's variant; the condition half also
                     shows its own current-scale tokens, the target attends to it within the
                     scale; no loss on the condition); measured in docs/earthmapper.md.
    coord_drop_rate, modality_drop_rate   CFG training dropout of coordinates / of one half
    geo_num_freqs, geo_hidden          SinEmbed frequencies (2^0..2^15 cycles/360°), MLP width
    si_layer, si_weight (σ = 0.5), si_loss ("sqnorm" = Eq. 13 | "mse" | "cosine"),
    si_target ("reconstruction" = Eq. 13 | "image"), si_encoder (DINOv2 variant),
    si_dinov2 (official .pth for on-the-fly targets), si_image_size, si_hidden
    tokenizer_dir, var_init            frozen tokenizer directory, converted VAR to start from
config.sampling: defaults of the sampler (sampling/earthmapper_sampler.py `sampling_config`):
top-k 100, top-p 0.55 (the paper), guidance triples per direction under guidance_form
"nested" (ControlVAR's; equal triples = plain CFG), Complexity Guidance on, Key Point Force on
(τ = 0.95, not in the paper: docs/guidance.md).

Run (prints the config):
    .venv/bin/python -c "import configs.earthmapper as c; print(c.get_config('d24'))"
"""

import ml_collections

from earthmapper_jax.models.earthmapper import model_config
from earthmapper_jax.sampling.earthmapper_sampler import sampling_config

NAMES = ("tiny", "d16", "d20", "d24", "d30", "ny")


def get_config(arg=None):
    name = str(arg or "d24")
    if name not in NAMES:
        raise ValueError(f"earthmapper config arg must be one of {NAMES}, got {name!r}")
    config = ml_collections.ConfigDict()
    config.model = model_config("d24" if name == "ny" else name)
    config.sampling = sampling_config()
    if name == "ny":
        config.model.coord_drop_rate = 0.0  # no coordinates at all: c_g is always the null
    return config
