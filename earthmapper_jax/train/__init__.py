"""The training system: one trainer for the tokenizer and EarthMapper, from 1 CPU to a pod.

    from earthmapper_jax.train.trainer import train_and_evaluate
    summary = train_and_evaluate(config, workdir)

Modules: sharding (mesh, logical-axis rules, batch assembly), optim (VAR's AdamW recipe),
state (TrainState), checkpoints (Orbax manager with the Grain iterator), metrics (JSONL,
progress, MFU), tasks (the Task interface; task_adapters for the real models, toy_task for
tests), defaults (the training fields of every config), trainer (the loop). See
docs/training.md.
"""
