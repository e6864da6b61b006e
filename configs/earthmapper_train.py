"""Training configs for EarthMapper (task "earthmapper", train/earthmapper_task.py); the model
fields are models.earthmapper.model_config's (as in configs/earthmapper.py), the periodic sample
grids use the sampler's defaults (earthmapper_sampler.sampling_config).

    get_config("cnsatmap_d24")   THE PAPER (§V-B): depth 24 initialised from VAR-d24 (var_init is
                                 required), 10 scales at 256², GJSA as Eq. 10 (within_scale
                                 "all", directed_rate 0), SI σ 0.5 on the reconstruction
                                 targets of Eq. 13, AdamW, 100 epochs, batch 24; samples with
                                 top-k 100, top-p 0.55, Key Point Force and Complexity Guidance
    get_config("nymaps_d24")     the paper's New York run: the same recipe on the pix2pix maps
                                 (1096 pairs, no coordinates: every tile uses the learned null)
    get_config("cnsatmap_d24_directed")   the project's variant (not the paper): half the rows
                                 trained as one-way translations (directed_rate 0.5, "group")
    get_config("cnsatmap_d16")   the paper's recipe at depth 16 (from VAR-d16): not the paper
    get_config("nymaps_d16")     NOT the paper's New York run: depth 16 (paper 24), 200 epochs
                                 (paper 100), batch 64 (paper 24): a cheaper model for the small
                                 dataset
    (the tiny CPU configs, the small-budget recipe: configs/earthmapper_tiny.py)

Values the paper does not give, each labelled where it is set below ("not in the paper, from
VAR/ControlVAR"): learning rate per 256 images (VAR: 1e-4 d16, 8e-5 d24), betas (0.9, 0.95),
weight decay 0.05 with VAR's no-decay list, warm-up 2 epochs, linear decay to 10 % (d16) /
1 % (d24), clip 2.0 (all VAR's train.py / arg_util.py), condition dropout 0.1 (VAR's
cond_drop_rate; ControlVAR the same), bf16 compute (VAR's fp16/bf16 AMP), the SI tap layer
(depth/3), the DINOv2 variant (ViT-B/14) and the alignment MLP (REPA's projector).
"Batch 24": the paper does not say per GPU or global; we read it as global (24 pairs per step
over all devices). On 8 devices that is 3 per device; `--config.batch_size=192` is the
per-GPU reading.

Run (CNSatMap; data from `earthmapper prepare cnsatmap`, tokens and SI targets from
`earthmapper prepare tokens`, VAR weights from `earthmapper convert var`): the command blocks of
docs/training.md, which tests/test_docs_commands.py runs as written.
Tiny, on a laptop: configs/earthmapper_tiny.py.
"""

import ml_collections

from earthmapper_jax.models.earthmapper import model_config
from earthmapper_jax.sampling.earthmapper_sampler import sampling_config
from earthmapper_jax.train.defaults import add_training_fields

# Paper values (§V-B, Tables IV/V) that tests/test_paper_configs.py asserts.
PAPER = dict(depth=24, batch_size=24, num_epochs=100, si_weight=0.5, top_k=100, top_p=0.55,
             image_size=256, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), within_scale="all",
             directed_rate=0.0)

_VARIANTS = {
    # name: (model name, dataset, base_lr, final_lr_frac); lr: not in the paper, from VAR
    "cnsatmap_d24": ("d24", "cnsatmap", 8e-5, 0.01),
    "cnsatmap_d24_directed": ("d24", "cnsatmap", 8e-5, 0.01),
    "nymaps_d24": ("d24", "nymaps", 8e-5, 0.01),
    "cnsatmap_d16": ("d16", "cnsatmap", 1e-4, 0.1),
    "nymaps_d16": ("d16", "nymaps", 1e-4, 0.1),
}


def get_config(arg=None):
    arg = str(arg or "cnsatmap_d24")
    if arg not in _VARIANTS:
        raise ValueError(f"earthmapper_train config arg must be one of {sorted(_VARIANTS)}, "
                         f"got {arg!r}")
    model_name, dataset, base_lr, final_frac = _VARIANTS[arg]
    config = ml_collections.ConfigDict()
    config.task = "earthmapper"
    config.model = model_config(model_name)
    # Sampler options for the periodic sample grids (the paper's top-k / top-p and guidance).
    config.sample_options = sampling_config()
    add_training_fields(config)
    config.optim.base_lr = base_lr
    config.optim.final_lr_frac = final_frac
    config.optim.warmup_epochs = 2.0   # not in the paper, from VAR (train.py: ep/50)
    # The learned null coordinate plays VAR's cfg_uncond role: no weight decay on it.
    config.optim.no_decay_extra = ("null", "modality_embed")
    # The image size is the tokenizer's (train/preflight.py fills it in); setting it to another
    # size is refused.
    config.data.image_size = ml_collections.config_dict.placeholder(int)
    config.data.augment = True
    config.checkpoint.best_metric = "eval/loss"
    config.checkpoint.best_mode = "min"
    config.model.dtype = "bfloat16"    # not in the paper, from VAR (bf16/fp16 AMP)
    # config.model.attention stays "auto": cuDNN fused attention on GPU, XLA elsewhere
    config.model.remat = "none"
    # The paper's model (§IV-D, Eq. 10-14): pure joint GJSA, SI on the reconstruction targets.
    config.model.within_scale = PAPER["within_scale"]
    config.model.directed_rate = PAPER["directed_rate"]
    config.model.si_weight = PAPER["si_weight"]
    config.model.si_target = "reconstruction"
    # "required": training refuses to start without --config.model.var_init=DIR (the paper
    # initialises from VAR weights); --config.model.var_init=none trains from scratch on purpose.
    config.model.var_init = "required"
    config.num_epochs = PAPER["num_epochs"]
    config.batch_size = PAPER["batch_size"]   # the paper's "batch size 24", read as global
    config.checkpoint.every_steps = 2000
    config.log_every_steps = 50
    config.eval_every_steps = 5000
    config.eval_batches = 16
    config.sample_every_steps = 5000
    config.sample_batch_size = 4
    if arg == "cnsatmap_d24_directed":  # the project's variant, measured in docs/earthmapper.md
        config.model.within_scale = "group"
        config.model.directed_rate = 0.5
    if dataset == "nymaps":
        config.model.coord_drop_rate = 0.0  # no coordinates: every tile uses the null
        config.checkpoint.every_steps = 500
        config.eval_every_steps = 500
        config.sample_every_steps = 500
    if arg == "nymaps_d16":  # not the paper's New York run (see the module doc)
        config.num_epochs = 200
        config.batch_size = 64
    return config
