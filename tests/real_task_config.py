"""The real training tasks at the smallest shapes their configs allow, for the trainer's hard
paths (tests/test_trainer_real_tasks.py: kill and resume, another mesh, eval and sample hooks).

    get_config("tokenizer")    configs/tokenizer_var.py:tiny with a 2-level 16 px VQ-VAE
                               (tests/tiny_em_model.py's MICRO_TOKENIZER) and the GAN on: the
                               discriminator is in the params and its hinge loss in every step
    get_config("earthmapper")  configs/earthmapper_tiny.py:paper_tiny at depth 2, width 64, on a
                               16 px tokenizer (scales 1,2,4,8), images tokenised on the fly

The data and the tokenizer come as overrides:
    python -m earthmapper_jax.main --config tests/real_task_config.py:tokenizer --workdir W \
        --config.data.dir=DATA
    python -m earthmapper_jax.main --config tests/real_task_config.py:earthmapper --workdir W \
        --config.data.dir=DATA --config.model.tokenizer_dir=TOK
"""

from configs import earthmapper_tiny, tokenizer_var
from tests.tiny_em_model import MICRO_TOKENIZER

ARGS = ("tokenizer", "earthmapper")


def _training(config):
    """What both share: a few steps, everything a hook can do inside them."""
    config.batch_size = 8
    config.total_steps = 12
    config.optim.warmup_steps = 2
    config.optim.warmup_epochs = None
    config.data.augment = False
    config.data.image_size = MICRO_TOKENIZER["image_size"]
    config.mesh.data = -1          # every device of the process (the tests start 4)
    config.log_every_steps = 1
    config.eval_every_steps = 4
    config.eval_batches = 1
    config.sample_every_steps = 6
    config.sample_batch_size = 2
    config.checkpoint.every_steps = 4
    config.checkpoint.keep = 5
    config.progress = False
    return config


def get_config(arg=None):
    arg = str(arg or "tokenizer")
    if arg not in ARGS:
        raise ValueError(f"real_task_config arg must be one of {ARGS}, got {arg!r}")
    if arg == "tokenizer":
        config = tokenizer_var.get_config("tiny")
        config.model.update(MICRO_TOKENIZER)
        config.loss.update(gan_weight=0.1, disc_ch=8, disc_layers=2)
        config.codebook.restart_max_age = 3  # restarts inside the run (update_extra, extra state)
        config.codebook.restart_every = 5
        config.data.examples_per_epoch = None  # counted from the data
    else:
        config = earthmapper_tiny.get_config("paper_tiny")
        config.model.update(depth=2, embed_dim=64, num_heads=2,
                            patch_nums=MICRO_TOKENIZER["patch_nums"],
                            vocab_size=MICRO_TOKENIZER["vocab_size"])
        config.sample_options = {"top_k": 8, "top_p": 0.9}
    return _training(config)
