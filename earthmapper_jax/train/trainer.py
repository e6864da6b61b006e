"""`train_and_evaluate(config, workdir, task=None)`: the whole training run, top to bottom.

Works for any `Task` (train/tasks.py; REGISTRY below names the real ones, tests pass their toy
model's) on one CPU, one GPU or a pod:
the mesh comes from the config, params and optimizer state are born sharded, batches are
assembled from each process's share, the state is donated to the step. Mixed precision is the
model's business (`config.model.dtype`, e.g. bfloat16 compute on the fp32 params the trainer
keeps); losses come back fp32.
"""

from __future__ import annotations

import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from earthmapper_jax.errors import EarthMapperError, InputError
from earthmapper_jax.io.files import is_remote
from earthmapper_jax.progress import progress
from earthmapper_jax.train import (checkpoints, earthmapper_task, hosts, optim, pix2pix_task,
                                   preflight, sharding, tokenizer_task)
from earthmapper_jax.train import metrics as metrics_lib
from earthmapper_jax.train import state as state_lib
from earthmapper_jax.train.stop_signals import StopSignals
from earthmapper_jax.train.tasks import Task

# config.task -> the factory of its Task.
REGISTRY = {
    "earthmapper": earthmapper_task.make_task,
    "tokenizer": tokenizer_task.make_task,
    "pix2pix": pix2pix_task.make_task,
}


def get_task(config) -> Task:
    """The Task named by `config.task`."""
    name = config.get("task", None)
    if name not in REGISTRY:
        raise InputError(f"config.task={name!r} is not a known task; expected one of "
                         f"{sorted(REGISTRY)}")
    return REGISTRY[name]()


class NonFiniteLossError(EarthMapperError):
    """The loss or the gradient became NaN/Inf; training stopped without saving."""


def _steps(config, task, global_batch):
    """(total_steps, steps_per_epoch) from total_steps or num_epochs."""
    n = config.data.get("examples_per_epoch", None)
    if n is None and task.examples_per_epoch is not None:
        n = task.examples_per_epoch(config)
    steps_per_epoch = max(1, n // global_batch) if n else None
    if config.get("total_steps", None):
        return int(config.total_steps), steps_per_epoch or int(config.total_steps)
    if config.get("num_epochs", None) and steps_per_epoch:
        return int(math.ceil(config.num_epochs * steps_per_epoch)), steps_per_epoch
    raise EarthMapperError("set config.total_steps, or config.num_epochs with a dataset "
                           "whose size is known (config.data.examples_per_epoch)")


def _unbox(tree):
    return nn.meta.unbox(tree)


def _fresh_state(config, task, tx, init_key, pretrained=None):
    if pretrained is None:
        params = task.init_params(config, init_key)
    else:
        params = task.init_params(config, init_key, pretrained)
    params = _unbox(params)
    extra = task.init_extra(config) if task.init_extra is not None else {}
    return state_lib.create(params, tx, config.seed, extra)


def abstract_train_state(config, task, mesh, tx, rules=sharding.LOGICAL_AXIS_RULES):
    """(TrainState of ShapeDtypeStructs carrying their shardings, TrainState of shardings).

    Nothing is computed: shapes come from `jax.eval_shape`. Restoring a checkpoint into this
    target never materialises an initial state.
    """
    init_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    boxed = jax.eval_shape(lambda: task.init_params(config, init_key))
    param_sh = sharding.param_shardings(boxed, mesh, rules)
    repl = sharding.replicated(mesh)
    shapes = jax.eval_shape(lambda: _fresh_state(config, task, tx, init_key))
    # Optimizer moments follow their parameter's sharding; counters are replicated.
    opt_sh = optax.tree_utils.tree_map_params(
        tx, lambda _, s: s, shapes.opt_state, param_sh, transform_non_params=lambda _: repl,
        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
    state_sh = state_lib.TrainState(step=repl, params=param_sh, opt_state=opt_sh, rng=repl,
                                    extra=jax.tree.map(lambda _: repl, shapes.extra))
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            shapes, state_sh)
    return abstract, state_sh


def create_train_state(config, task, mesh, tx, rules=sharding.LOGICAL_AXIS_RULES):
    """Returns (state, state_shardings): params and optimizer state born sharded on `mesh`:
    one jit'd init writes each device's slice directly, nothing is materialised whole."""
    init_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    _, state_sh = abstract_train_state(config, task, mesh, tx, rules)
    pretrained = task.pretrained(config) if task.pretrained is not None else None
    if pretrained is not None:  # host arrays -> device arrays sharded like their parameters
        pretrained = jax.tree.map(_put_sharded, pretrained,
                                  _prefix_of(state_sh.params, pretrained))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = jax.jit(lambda pre: _fresh_state(config, task, tx, init_key, pre),
                        out_shardings=state_sh)(pretrained)
    return state, state_sh


def _prefix_of(tree, part):
    """The subtree of nested dict `tree` that has the keys of `part`."""
    if isinstance(part, dict):
        return {k: _prefix_of(tree[k], v) for k, v in part.items()}
    return tree


def _put_sharded(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def make_train_step(config, task, tx, lr_fn):
    """The jit-able step: (state, batch) -> (new state, metrics)."""

    def train_step(state, batch, frozen=None):
        rng = state.step_key()
        (loss, aux), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(
            state.params, batch, rng, config, frozen)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        extra = state.extra
        out = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params), "lr": lr_fn(state.step)}
        if task.update_extra is not None:
            params, extra, more = task.update_extra(params, extra, batch, aux,
                                                    jax.random.fold_in(rng, 1), config, state.step)
            out.update(more)
        out.update({k: v for k, v in aux.items() if jnp.ndim(v) == 0})  # scalars are logged
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra)
        return new, out

    return train_step


def _check_finite(step, m, last_saved):
    bad = [k for k in ("loss", "grad_norm") if k in m and not np.isfinite(m[k])]
    if bad:
        raise NonFiniteLossError(
            f"{bad[0]} became {m[bad[0]]} at step {step}; stopped without saving "
            f"(last good checkpoint: {'none' if last_saved is None else f'step {last_saved}'}). "
            "Lower the learning rate or check the data.")


def place_frozen(frozen, mesh):
    """Frozen (untrained) arrays on every device, replicated; works on multi-host too since
    every process holds the same values."""
    repl = sharding.replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, repl, lambda idx: x[idx])

    return jax.tree.map(put, frozen)


def _evaluate(task, eval_step, state, config, mesh, local_batch, frozen):
    """Means of eval_fn's scalars over at most config.eval_batches global batches, and
    eval/examples: how many examples they held."""
    sums, n = {}, 0
    batches = iter(task.eval_data(config, batch_size=local_batch))
    for i in range(config.get("eval_batches", 8)):
        batch = next(batches, None)
        # A split that does not divide between the hosts leaves some a batch short; an eval
        # step is a collective, so a host running one more would wait for the others forever.
        if not hosts.all_have(batch is not None):
            break
        m = jax.device_get(eval_step(state.params, sharding.host_batch_to_global(batch, mesh),
                                     jax.random.fold_in(state.step_key(), 10_000 + i), frozen))
        for k, v in m.items():
            if np.ndim(v) == 0:
                sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    out = {f"eval/{k}": v / max(n, 1) for k, v in sums.items()}
    out["eval/examples"] = n * local_batch * jax.process_count()
    if task.eval_host is not None:
        host = task.eval_host(state.params, jax.random.fold_in(state.step_key(), 20_000), config, frozen)
        out.update({f"eval/{k}": float(v) for k, v in (host or {}).items()})
    return out


def _export(task, state, config, workdir):
    """Writes the loadable model once training is done (single-process runs: a pod run is
    exported by running the same command again on one host, which restores and exports)."""
    if task.export is None:
        return
    if jax.process_count() > 1 or is_remote(workdir):
        if jax.process_index() == 0:
            print("export skipped (multi-host run or gs:// workdir): copy the workdir to a "
                  "local disk and rerun the same command there on one host to export the final "
                  "checkpoint", flush=True)
        return
    path = task.export(jax.device_get(state.params), config, workdir)
    print(f"exported the trained model to {path}", flush=True)


def train_and_evaluate(config, workdir, task: Task | None = None) -> dict:
    """Trains `task` (default: REGISTRY[config.task]()) to `config.total_steps` (or
    `num_epochs`), resuming from the newest checkpoint in `workdir` if there is one. Returns a
    summary dict (final step, last metrics, why it stopped: "done", "time budget", "preempted"
    (SIGTERM) or "interrupted" (Ctrl-C))."""
    # Everything that can be checked from the config and the files it names is checked before
    # the workdir exists: a run that cannot work leaves nothing behind.
    task = task if task is not None else get_task(config)
    notes = preflight.check(config)
    workdir = epath.Path(workdir)  # local or gs://
    workdir.mkdir(parents=True, exist_ok=True)
    hosts.maybe_initialize_distributed(config)
    is_main = jax.process_index() == 0
    if is_main:
        for note in notes:
            print(note, flush=True)

    ##### Mesh, task, optimiser #####
    mesh = sharding.make_mesh(config.get("mesh", None))
    rules = tuple(tuple(r) for r in (config.get("sharding_rules", None)
                                     or sharding.LOGICAL_AXIS_RULES))
    global_batch = int(config.batch_size)
    if global_batch % sharding.data_parallel_size(mesh) or global_batch % jax.process_count():
        raise EarthMapperError(
            f"batch_size {global_batch} must be divisible by the data-parallel mesh size "
            f"{sharding.data_parallel_size(mesh)} and the process count {jax.process_count()}")
    local_batch = global_batch // jax.process_count()
    total_steps, steps_per_epoch = _steps(config, task, global_batch)
    warmup = optim.warmup_steps_from(config.optim, steps_per_epoch, total_steps)
    tx, lr_fn = optim.make_optimizer(config.optim, global_batch, total_steps, warmup)

    evaluates = task.eval_fn is not None and config.get("eval_every_steps", 0) >= 0
    eval_split = task.eval_split(config) if evaluates and task.eval_split is not None else None
    if is_main and eval_split is not None and eval_split != config.data.get("eval_split", None):
        print(f"no {config.data.get('eval_split', None)!r} split in the data: evaluation runs on "
              f"the {eval_split!r} split (metrics say eval_split={eval_split})", flush=True)

    ##### Frozen parts, state (born sharded), data, checkpoints; resume if possible #####
    frozen = place_frozen(task.load_frozen(config), mesh) if task.load_frozen else None
    train_iter = task.train_data(config, seed=config.seed, batch_size=local_batch)
    ckcfg = config.checkpoint
    ckpt = checkpoints.Checkpointer(
        workdir / "checkpoints", keep=ckcfg.get("keep", 3), keep_best=ckcfg.get("keep_best", 0),
        best_metric=ckcfg.get("best_metric", None), best_mode=ckcfg.get("best_mode", "min"),
        async_save=ckcfg.get("async_save", True))
    writer = metrics_lib.JsonlWriter(workdir / "metrics.jsonl")
    start = 0
    if ckpt.latest_step() is not None:
        target, state_sh = abstract_train_state(config, task, mesh, tx, rules)
        train_state, start = ckpt.restore(target, data_iter=train_iter)
        writer.truncate_after(start)  # drop records of steps that are about to be redone
        if is_main:
            print(f"resumed from {ckpt.directory}/{start}", flush=True)
    else:
        train_state, state_sh = create_train_state(config, task, mesh, tx, rules)
    last_saved = start if start else None

    ##### Compiled step (AOT: one compile, and its FLOP count for MFU) #####
    if start >= total_steps:  # finished before: only (re-)export
        _export(task, train_state, config, workdir)
        ckpt.close()
        return {"step": start, "stopped": "done", "metrics": {}}
    train_step = make_train_step(config, task, tx, lr_fn)
    first_np = next(train_iter)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        first = sharding.host_batch_to_global(first_np, mesh)
        step_fn = jax.jit(train_step, out_shardings=(state_sh, sharding.replicated(mesh)),
                          donate_argnums=0).lower(train_state, first, frozen).compile()
        eval_step = (jax.jit(lambda p, b, r, f: task.eval_fn(p, b, r, config, f))
                     if task.eval_fn is not None and task.eval_data is not None else None)
    flops = metrics_lib.compiled_flops(step_fn)
    if task.flops_per_example is not None:  # the model's own count beats XLA's estimate
        flops = task.flops_per_example(config) * global_batch / jax.device_count()
    peak = config.get("peak_flops", None) or metrics_lib.peak_flops_per_device()
    meter = metrics_lib.Throughput(global_batch, flops * jax.device_count() if flops else None,
                                   jax.device_count(), peak)

    eval_every = config.get("eval_every_steps", 0)  # 0: at the end only; < 0: never
    sample_every = config.get("sample_every_steps", 0)
    sample_batch = None
    if task.sample_fn is not None and task.eval_data is not None and sample_every >= 0:
        sample_batch = next(iter(task.eval_data(config, batch_size=local_batch)))
        sample_batch = {k: v[: config.get("sample_batch_size", 4)] for k, v in
                        sample_batch.items()}
    (workdir / "samples").mkdir(exist_ok=True)

    def every(n, step):
        return n > 0 and step % n == 0

    ##### Loop #####
    bar = progress(total_steps, desc="train", unit="step", initial=start,
                   enabled=is_main and config.get("progress", True))
    log_every = config.get("log_every_steps", 50)
    pending = None  # (step, device metrics): read one step late so the device never waits
    last = {}
    stopped = "done"

    def drain(pending_):
        nonlocal last
        step_, m = pending_
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        _check_finite(step_, m, last_saved)
        if every(log_every, step_) or step_ == total_steps:
            m.update(meter.measure())
            m["epoch"] = step_ / steps_per_epoch
            writer.write(step_, m)
            bar.set_postfix(metrics_lib.format_postfix(m))
        last = m

    budget = config.get("max_train_seconds", None)
    deadline = time.monotonic() + budget if budget else None
    with StopSignals() as preempt, jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        batch_np = first_np
        try:
            for step in range(start + 1, total_steps + 1):
                if batch_np is None:
                    batch_np = next(train_iter)
                batch = sharding.host_batch_to_global(batch_np, mesh)
                train_state, m = step_fn(train_state, batch, frozen)
                batch_np = None
                meter.tick()
                bar.update(1)
                if pending is not None:
                    drain(pending)
                pending = (step, m)

                stop = preempt.requested or (jax.process_count() > 1
                                             and ckpt.manager.reached_preemption(step))
                out_of_time = deadline is not None and hosts.all_agree(time.monotonic() > deadline)
                is_last = step == total_steps or stop or out_of_time
                do_eval = eval_step is not None and (
                    every(eval_every, step) or (is_last and eval_every >= 0))
                do_sample = sample_batch is not None and (
                    every(sample_every, step) or (is_last and sample_every >= 0))
                do_save = every(ckcfg.get("every_steps", 1000), step) or is_last
                if not (do_eval or do_sample or do_save):
                    continue
                drain(pending)  # never evaluate, sample or save a state of unchecked loss
                pending = None
                ev = {}
                if do_eval:
                    ev = _evaluate(task, eval_step, train_state, config, mesh, local_batch,
                                   frozen)
                    writer.write(step, dict(ev, eval_split=eval_split) if eval_split else ev)
                    on = f" (on {eval_split})" if eval_split else ""
                    bar.write(f"step {step}{on}: " + ", ".join(f"{k} {v:.4g}" for k, v in ev.items()))
                if do_sample:
                    path = workdir / "samples" / f"step_{step:07d}.png"
                    sm = task.sample_fn(train_state.params, sample_batch,
                                        train_state.step_key(), config, path, frozen)
                    if sm:
                        writer.write(step, {f"sample/{k}": v for k, v in sm.items()})
                if do_save:
                    best = dict(last, **ev)
                    ckpt.save(train_state, data_iter=train_iter, config=config, metrics=best)
                    last_saved = step
                if stop:
                    stopped = "preempted" if preempt.requested != "SIGINT" else "interrupted"
                    bar.write(f"{preempt.requested or 'pre-emption'}: saved step {step}, exiting")
                    break
                if out_of_time:
                    stopped = "time budget"
                    bar.write(f"max_train_seconds={budget:g} spent: stopped at step {step}")
                    break
            if pending is not None:
                drain(pending)
            if stopped in ("done", "time budget"):
                ckpt.wait()
                _export(task, train_state, config, workdir)
        finally:
            bar.close()
            writer.close()
            ckpt.close()  # waits for async writes of good states; nothing is saved after NaN
            if hasattr(train_iter, "close"):
                try:
                    train_iter.close()
                except Exception:  # noqa: BLE001 - closing a data iterator must not mask errors
                    pass
    return {"step": int(jax.device_get(train_state.step)), "stopped": stopped, "metrics": last}
