"""Training configs for VAR's multi-scale VQ-VAE tokenizer (task "tokenizer").

    get_config("256")   VAR's released architecture (ch 160, ch_mult 1,1,2,2,4, z 32, V 4096),
                        patch_nums 1,2,3,4,5,6,8,10,13,16 for 256 px images
    get_config("512")   the same VAE with VAR's 512 px scales 1,2,3,4,6,9,13,18,24,32
    get_config("tiny")  CPU-sized (ch 32, ch_mult 1,1,2,2, z 8, V 512, 64 px, scales 1,2,3,4,6,8)

Run (the tiny one on the synthetic city; 200 steps take about 10 minutes on 2 CPU cores):
    earthmapper prepare synthetic --n 512 --size 64 --out /tmp/syn64
    python -m earthmapper_jax.main --config configs/tokenizer_var.py:tiny --workdir /tmp/tok \
        --config.data.dir=/tmp/syn64
    python -m earthmapper_jax.main --config configs/tokenizer_var.py:256 --workdir /tmp/tok256 \
        --config.data.dir=/data/cnsatmap_tfrecords --config.loss.l1_weight=1.0

`config.model` holds the tokenizer fields (earthmapper_jax.tokenizer.config.DEFAULTS; saved as
the tokenizer's config.json), `config.loss` the loss weights (tokenizer.losses.LOSS_DEFAULTS).
"""

import ml_collections

from earthmapper_jax.tokenizer.config import PATCH_NUMS_256, PATCH_NUMS_512, model_config
from earthmapper_jax.tokenizer.losses import default_loss_config
from earthmapper_jax.train.defaults import add_training_fields

_MODELS = {
    "256": dict(image_size=256, patch_nums=PATCH_NUMS_256),
    "512": dict(image_size=512, patch_nums=PATCH_NUMS_512),
    "tiny": dict(ch=32, ch_mult=(1, 1, 2, 2), z_channels=8, vocab_size=512, image_size=64,
                 patch_nums=(1, 2, 3, 4, 6, 8)),
}


def get_config(arg=None):
    arg = str(arg or "256")
    if arg not in _MODELS:
        raise ValueError(f"tokenizer_var config arg must be one of {sorted(_MODELS)}, got {arg!r}")
    config = ml_collections.ConfigDict()
    config.task = "tokenizer"
    # model_config checks the settings (e.g. last patch_num == image_size / 2^(levels-1)).
    config.model = ml_collections.ConfigDict(model_config(_MODELS[arg]))
    config.loss = default_loss_config()
    # Dead-code restarts (train/tokenizer_task.py): codes unused for restart_max_age steps take
    # random encoder outputs, checked every restart_every steps; 0 = off.
    config.codebook = ml_collections.ConfigDict(dict(restart_max_age=0, restart_every=100))
    add_training_fields(config)
    config.data.image_size = config.model.image_size
    # VQGAN-style optimiser for autoencoders: Adam(0.5, 0.9), no weight decay.
    config.optim.b1, config.optim.b2 = 0.5, 0.9
    config.optim.weight_decay = 0.0
    config.optim.clip_norm = 1.0
    config.checkpoint.best_metric = "eval/psnr"
    config.checkpoint.best_mode = "max"
    if arg == "tiny":
        config.batch_size = 8
        config.total_steps = 200
        config.optim.base_lr = 0.03  # peak lr = base_lr * 8 / 256 ~ 1e-3
        config.optim.warmup_steps = 10
        config.data.examples_per_epoch = 512
        config.checkpoint.every_steps = 100
        config.log_every_steps = 10
        config.eval_every_steps = 100
        config.eval_batches = 2
        config.codebook.restart_max_age = 50
        config.codebook.restart_every = 25
    else:
        config.batch_size = 64
        config.total_steps = 400_000
        config.optim.base_lr = 4e-4  # peak 1e-4 at batch 64
        config.optim.warmup_steps = 5000
    return config
