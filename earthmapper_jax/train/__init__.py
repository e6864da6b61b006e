"""The training system: one trainer for the tokenizer and EarthMapper, from 1 CPU to a pod.

    from earthmapper_jax.train.trainer import train_and_evaluate
    summary = train_and_evaluate(config, workdir)

Modules: sharding (mesh, logical-axis rules, batch assembly), optim (VAR's AdamW recipe),
state (TrainState), checkpoints (Orbax manager with the Grain iterator), metrics (JSONL,
progress, MFU), tasks (the Task interface), earthmapper_task / tokenizer_task (one file per
task), image_data (the image pairs both tasks read), defaults (the training fields of every
config), preflight (the config checked against its files before anything is built; no JAX),
stop_signals (SIGTERM / Ctrl-C), hosts (jax.distributed, what every process must agree on),
trainer (the loop and the task registry). See docs/training.md.
"""
