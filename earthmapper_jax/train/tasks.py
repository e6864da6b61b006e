"""What the trainer needs from a model: a `Task` of plain functions.

The trainer is generic; a task says how to build params, compute the loss, feed data and
draw samples. One file per task holds all of it: `earthmapper_task.py`, `tokenizer_task.py`
(each with `make_task()`); `trainer.REGISTRY` maps `config.task` to those factories (this
module cannot hold it: the task modules import `Task` from here). The trainer's own test model
is tests/toy_task.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional


@dataclasses.dataclass(frozen=True)
class Task:
    """Functions the trainer calls (all but the first three are optional).

    init_params(config, rng) -> params; leaves may be `nn.LogicallyPartitioned` boxes.
        With `pretrained`: init_params(config, rng, part) overwrites the leaves `part` holds.
    loss_fn(params, batch, rng, config, frozen) -> (fp32 scalar loss, dict of scalar metrics);
        traced under jit, batch = dict of global jax.Arrays.
    train_data(config, *, seed, batch_size) -> checkpointable iterator (get_state/set_state)
        of host-local numpy dict batches of `batch_size` (this process's share).
    pretrained(config) -> partial params tree of host arrays (read from disk once, on the host),
        or None: weights to start from (e.g. VAR's for EarthMapper). The trainer places it
        like the params and passes it to init_params inside the jitted init; a resumed run
        never reads it.
    load_frozen(config) -> pytree of arrays that are not trained (a frozen tokenizer, DINOv2);
        placed on the devices once (replicated) and passed to loss/eval/sample as `frozen`.
    eval_data(config, *, batch_size) -> finite iterable of host-local numpy dict batches.
    eval_split(config) -> str: the split eval_data reads (the trainer says so once when it is
        not config.data.eval_split, and labels the metrics with it).
    eval_fn(params, batch, rng, config, frozen) -> dict of scalar metrics (jit'd by the trainer).
    eval_host(params, rng, config, frozen) -> dict of scalars: host-side evaluation (sampling,
        image metrics) run after eval_fn's batches at each evaluation, logged with them (eval/).
    sample_fn(params, batch, rng, config, path, frozen) -> optional dict of scalars; host-side
        hook that writes a PNG grid to `path` (process 0 writes; every process calls it).
    export(params, config, workdir) -> path: writes the trained model (host numpy params) in its
        loadable form under workdir (a tokenizer directory for `tokenizer.load`, a model
        directory for `earthmapper_jax.load`); called once at the end of training.
    init_extra(config) -> pytree of arrays: untrained state kept in TrainState.extra
        (replicated, checkpointed), e.g. codebook code ages.
    update_extra(params, extra, batch, aux, rng, config, step) -> (params, extra, metrics):
        runs inside the jit'd step after the optimizer update; `aux` is loss_fn's metrics dict
        (non-scalar entries, e.g. code hit counts, reach this hook but are never logged).
    examples_per_epoch(config) -> int.
    flops_per_example(config) -> float (training FLOPs, forward + backward) for MFU.
    """

    name: str
    init_params: Callable[..., Any]
    loss_fn: Callable[..., Any]
    train_data: Callable[..., Iterator[dict]]
    pretrained: Optional[Callable[..., Any]] = None
    load_frozen: Optional[Callable[..., Any]] = None
    eval_data: Optional[Callable[..., Any]] = None
    eval_split: Optional[Callable[..., str]] = None
    eval_fn: Optional[Callable[..., dict]] = None
    eval_host: Optional[Callable[..., dict]] = None
    sample_fn: Optional[Callable[..., Any]] = None
    export: Optional[Callable[..., Any]] = None
    init_extra: Optional[Callable[..., Any]] = None
    update_extra: Optional[Callable[..., Any]] = None
    examples_per_epoch: Optional[Callable[..., int]] = None
    flops_per_example: Optional[Callable[..., float]] = None
