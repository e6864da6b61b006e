"""Training fields shared by every training config (configs/*.py call `add_training_fields`).

Only training fields live here; model fields belong to the model's own config. Every field
exists (with a typed placeholder where unset) so `--config.x=y` can override any of them.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def add_training_fields(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """Adds the training fields (VAR's optimiser recipe as the default) to `config` in place.

    Fields already present in `config` are kept; `overrides` (dotted names allowed as
    `optim__base_lr=...`) win over both.
    """
    defaults = ml_collections.ConfigDict({
        "task": config_dict.placeholder(str),   # "tokenizer" | "earthmapper" | "toy"
        "seed": 0,
        "batch_size": 256,                      # global, over all processes
        "num_epochs": config_dict.placeholder(float),
        "total_steps": config_dict.placeholder(int),  # wins over num_epochs
        # Wall-clock budget of this process's training loop: stop (save, export) when spent.
        "max_train_seconds": config_dict.placeholder(float),
        "data": {
            "dir": config_dict.placeholder(str),
            "split": "train",
            "eval_split": "val",
            "image_size": 256,
            "augment": True,
            # Pre-tokenised training (earthmapper prepare tokens): directory of token shards.
            "tokens_dir": config_dict.placeholder(str),
            "examples_per_epoch": config_dict.placeholder(int),  # else counted from the data
        },
        "optim": {
            "base_lr": 1e-4,            # per 256 images; peak = base_lr * batch_size / 256
            "b1": 0.9,
            "b2": 0.95,
            "eps": 1e-8,
            "weight_decay": 0.05,
            "weight_decay_end": config_dict.placeholder(float),  # VAR's cosine wd target
            "warmup_steps": config_dict.placeholder(int),
            "warmup_epochs": config_dict.placeholder(float),     # default: total/50 (VAR)
            "warmup_start": 0.005,      # warm-up starts at this fraction of the peak
            "final_lr_frac": 0.1,       # linear decay ends at this fraction of the peak
            "hold_frac": 0.05,          # VAR lin0: flat for this fraction after warm-up
            "clip_norm": 2.0,
            "no_decay_extra": (),       # model-specific no-decay name fragments
        },
        "mesh": {"data": -1, "fsdp": 1, "tensor": 1},
        "distributed": False,           # jax.distributed.initialize() (multi-host)
        # Where the processes meet (unset: JAX detects TPU pods / Slurm). A process that has
        # not met all the others within init_timeout_s stops with one line, never hangs.
        "cluster": {
            "coordinator_address": config_dict.placeholder(str),  # "host:port" of process 0
            "num_processes": config_dict.placeholder(int),
            "process_id": config_dict.placeholder(int),
            "init_timeout_s": 300,
        },
        "checkpoint": {
            "every_steps": 1000,
            "keep": 3,
            "keep_best": 1,
            "best_metric": "eval/loss",
            "best_mode": "min",
            "async_save": True,
        },
        "log_every_steps": 50,
        "eval_every_steps": 0,          # 0: only at the end; -1: never
        "eval_batches": 8,
        # Sampled translation metrics with each evaluation (host side, off by default): the
        # first `tiles` tiles of the eval split translated sat->map and scored (SSIM, PSNR,
        # RMSE; LPIPS when both weight files are set), logged as eval/sat2map_*.
        "eval": {
            "metrics": False,
            "tiles": 8,
            "lpips_net": "alex",
            "lpips_backbone": config_dict.placeholder(str),  # torchvision alexnet/vgg16 .pth
            "lpips_weights": config_dict.placeholder(str),   # lpips weights/v0.1/<net>.pth
        },
        "sample_every_steps": 0,        # 0: only at the end; -1: never
        "sample_batch_size": 4,
        "progress": True,
        "peak_flops": config_dict.placeholder(float),  # per device; else from a table
    })
    if config.get("task", None) == "tokenizer":
        # Dead-code restarts (tokenizer task): a code unused for `restart_max_age` steps is
        # replaced by a random encoder feature of the batch, checked every `restart_every`.
        defaults.codebook = {"restart_max_age": 0, "restart_every": 100}
    # preserve_field_references: unset placeholders keep their type, so that
    # `--config.total_steps=100` can still override them.
    for key, value in defaults.items(preserve_field_references=True):
        if key not in config:
            config[key] = value
        elif isinstance(value, ml_collections.ConfigDict):
            for sub, v in value.items(preserve_field_references=True):
                if sub not in config[key]:
                    config[key][sub] = v
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config
