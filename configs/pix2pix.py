"""Training configs for the pix2pix baseline (task "pix2pix", models/pix2pix.py).

    get_config("256")   the paper's model at its resolution: U-Net ngf 64 (8 levels, 54.4 M
                        params), 70×70 PatchGAN ndf 64, batch 1, Adam 2e-4 (β1 0.5, β2 0.999),
                        λ_L1 100, vanilla GAN loss; constant learning rate for the first half,
                        then linear to 0 (the paper's 100 + 100 epochs, here over total_steps)
    get_config("tiny")  64 px, CPU-sized (ngf 32, ndf 32, 6 levels, batch 8), the baseline of
                        the equal-wall-time comparison on the synthetic city
    Either takes ",map2sat" for the other direction ("tiny,map2sat"); pix2pix trains one model
    per direction.

Learning rate: pix2pix's Adam 2e-4 at its batch 1. The trainer's peak is
base_lr · batch_size / 256 (VAR's rule); these configs set base_lr so the peak is 2e-4 at their
batch (base_lr = 2e-4 · 256 / batch_size): a GAN's Adam step is not scaled with the batch here.
Changing --config.batch_size means changing --config.optim.base_lr with it to keep 2e-4.
No gradient clipping (the paper has none, and a global clip would couple the two networks'
steps), no weight decay.

Run (tiny, on the synthetic city):
    earthmapper prepare synthetic --n 1024 --size 64 --out /tmp/syn64
    python -m earthmapper_jax.main --config configs/pix2pix.py:tiny --workdir /tmp/p2p \
        --config.data.dir=/tmp/syn64
    earthmapper translate --checkpoint /tmp/p2p/model --direction sat2map tiles/ --out maps/
The paper's (one direction per run):
    python -m earthmapper_jax.main --config configs/pix2pix.py:256,map2sat --workdir /tmp/p2p256 \
        --config.data.dir=/data/pix2pix_maps_tfrecords
"""

import ml_collections

from earthmapper_jax.models.pix2pix import model_config
from earthmapper_jax.train.defaults import add_training_fields
from earthmapper_jax.train.pix2pix_task import default_loss_config

PAPER_LR = 2e-4
_MODELS = {
    "256": dict(image_size=256, ngf=64, ndf=64),
    "tiny": dict(image_size=64, ngf=32, ndf=32),
}


def get_config(arg=None):
    size, _, direction = str(arg or "256").partition(",")
    if size not in _MODELS:
        raise ValueError(f"pix2pix config arg must be one of {sorted(_MODELS)} "
                         f"(optionally ',sat2map' or ',map2sat'), got {arg!r}")
    config = ml_collections.ConfigDict()
    config.task = "pix2pix"
    config.model = ml_collections.ConfigDict(
        model_config(dict(_MODELS[size], direction=direction or "sat2map")))
    config.loss = default_loss_config()
    add_training_fields(config)
    config.data.image_size = config.model.image_size
    config.optim.b1, config.optim.b2 = 0.5, 0.999
    config.optim.weight_decay = 0.0
    config.optim.clip_norm = 0.0
    config.optim.warmup_steps = 0
    config.optim.warmup_start = 1.0
    config.optim.hold_frac = 0.5      # constant for the first half ...
    config.optim.final_lr_frac = 0.0  # ... then linear to 0
    config.checkpoint.best_metric = "eval/l1"
    config.checkpoint.best_mode = "min"
    if size == "tiny":
        config.batch_size = 8
        config.total_steps = 2000
        config.data.examples_per_epoch = 1024
        config.checkpoint.every_steps = 500
        config.log_every_steps = 50
        config.eval_every_steps = 500
        config.eval_batches = 4
    else:
        config.batch_size = 1
        config.num_epochs = 200.0
        config.checkpoint.every_steps = 5000
        config.eval_every_steps = 5000
    config.optim.base_lr = PAPER_LR * 256 / config.batch_size
    return config
