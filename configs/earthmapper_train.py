"""Training configs for EarthMapper (task "earthmapper", train/earthmapper_task.py); the model
fields are models.earthmapper.model_config's (as in configs/earthmapper.py), the periodic sample
grids use the sampler's defaults (earthmapper_sampler.sampling_config).

    get_config("cnsatmap_d24")  the paper: depth 24 from VAR-d24 weights, 256², AdamW, 100 epochs,
                                batch 24 per device on 8 devices (global 192), SI σ 0.5,
                                samples with top-k 100, top-p 0.55
    get_config("cnsatmap_d16")  the same recipe at depth 16 (from VAR-d16)
    get_config("nymaps_d16")    the pix2pix New York maps (1096 pairs, no coordinates), d16
    (the tiny CPU configs, the small-budget recipe: configs/earthmapper_tiny.py)

Not reported by the paper and taken from VAR's training script: base lr per 256 images
(1e-4 d16, 8e-5 d24), betas (0.9, 0.95), wd 0.05 with VAR's no-decay list, warm-up 2 epochs
(VAR: ep/50), linear decay to 10 % (d16) / 1 % (d24), clip 2.0, bf16 compute.

Run (CNSatMap on 8 GPUs or a TPU pod; data from `earthmapper prepare cnsatmap`, tokens from
`earthmapper prepare tokens`, VAR weights from `earthmapper convert var`):
    python -m earthmapper_jax.main --config configs/earthmapper_train.py:cnsatmap_d24 \
        --workdir gs://BUCKET/em_d24 --config.data.tokens_dir=gs://BUCKET/cnsatmap_tokens \
        --config.model.tokenizer_dir=/ckpt/vae --config.model.var_init=/ckpt/var_d24 \
        --config.model.si_dinov2=/ckpt/dinov2_vitb14_pretrain.pth
Tiny, on a laptop: configs/earthmapper_tiny.py.
"""

import ml_collections

from earthmapper_jax.models.earthmapper import model_config
from earthmapper_jax.sampling.earthmapper_sampler import sampling_config
from earthmapper_jax.train.defaults import add_training_fields

_VARIANTS = {
    # name: (model name, dataset, base_lr, final_lr_frac)
    "cnsatmap_d24": ("d24", "cnsatmap", 8e-5, 0.01),
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
    config.optim.warmup_epochs = 2.0
    # The learned null coordinate plays VAR's cfg_uncond role: no weight decay on it.
    config.optim.no_decay_extra = ("null", "modality_embed")
    config.data.image_size = 256
    config.data.augment = True
    config.checkpoint.best_metric = "eval/loss"
    config.checkpoint.best_mode = "min"
    config.model.dtype = "bfloat16"    # bf16 compute on fp32 master weights
    # config.model.attention stays "auto": cuDNN fused attention on GPU, XLA elsewhere
    config.model.remat = "none"
    config.num_epochs = 100
    config.batch_size = 24 * 8         # 24 per device on 8 devices
    config.checkpoint.every_steps = 2000
    config.log_every_steps = 50
    config.eval_every_steps = 5000
    config.eval_batches = 16
    config.sample_every_steps = 5000
    config.sample_batch_size = 4
    if dataset == "nymaps":
        config.num_epochs = 200        # 1096 pairs: ~6 steps/epoch at batch 192
        config.batch_size = 64
        config.model.coord_drop_rate = 0.0  # no coordinates: every tile uses the null
        config.checkpoint.every_steps = 500
        config.eval_every_steps = 500
        config.sample_every_steps = 500
    return config
