"""Training checkpoints: one Orbax CheckpointManager for state, data iterator and config.

Layout: WORKDIR/checkpoints/<step>/{state, data_iter, config}. `state` is the TrainState
(step, fp32 params, optimizer state, RNG key data); `data_iter` is the Grain iterator state
(one JSON per process); `config` is the run's config as JSON. Orbax writes each step under a
temporary name and renames it when complete, so a run killed mid-save leaves no checkpoint
that restore would pick up. Saves are asynchronous (device arrays are copied to host
synchronously, files written in the background). Retention: the newest `keep` checkpoints plus
the `keep_best` best ones by `best_metric`.
"""

from __future__ import annotations

import json
import math
import pathlib

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocm

from earthmapper_jax.errors import CheckpointError, quiet_on_failure
from earthmapper_jax.train.state import TrainState


def config_to_dict(config) -> dict:
    """A JSON-safe dict of an ml_collections config (tuples become lists)."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config, default=str))


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with the project's items and policies."""

    def __init__(self, directory, *, keep: int = 3, keep_best: int = 0,
                 best_metric: str | None = None, best_mode: str = "min",
                 async_save: bool = True):
        self.directory = (epath.Path(directory) if "://" in str(directory)
                          else epath.Path(pathlib.Path(directory).absolute()))
        self.best_metric = best_metric if keep_best else None
        self.best_mode = best_mode
        policies = [ocm.LatestN(n=max(1, int(keep)))]
        if self.best_metric:
            policies.append(ocm.BestN(get_metric_fn=self._score, reverse=(best_mode == "min"),
                                      n=int(keep_best), keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            best_fn=self._score if self.best_metric else None,  # makes Orbax store metrics
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            cleanup_tmp_directories=True,  # leftovers of a run killed mid-save
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data_iter", "config"))

    def _score(self, metrics) -> float:
        """The ranking value; a checkpoint saved before any evaluation ranks worst."""
        worst = math.inf if self.best_mode == "min" else -math.inf
        value = (metrics or {}).get(self.best_metric, worst)
        return value if math.isfinite(value) else worst

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def best_step(self) -> int | None:
        """Step of the best kept checkpoint by `best_metric` (None without metrics)."""
        if not self.best_metric:
            return None
        scored = []
        for step in self.all_steps():
            m = self.manager.metrics(step)
            if m and self.best_metric in m and math.isfinite(m[self.best_metric]):
                scored.append((m[self.best_metric], step))
        if not scored:
            return None
        return (min(scored) if self.best_mode == "min" else max(scored))[1]

    def save(self, state: TrainState, *, data_iter=None, config=None, metrics=None) -> bool:
        """Starts an (async) save of `state` at its step; all processes must call it.

        The caller decides when to save, so Orbax's own interval policy is bypassed (force);
        a save still in flight is waited for first, never skipped.
        """
        step = int(jax.device_get(state.step))
        items = {"state": ocp.args.StandardSave(state.to_dict())}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        if config is not None:
            items["config"] = ocp.args.JsonSave(config_to_dict(config))
        if self.best_metric:
            metrics = {k: float(v) for k, v in (metrics or {}).items() if k == self.best_metric}
        else:
            metrics = None
        return self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                                 force=True)

    def restore(self, target: TrainState, *, data_iter=None, step: int | None = None):
        """Restores into `target`'s shapes, dtypes and shardings (arrays or ShapeDtypeStructs).

        `target` may be sharded over another mesh than the one that saved: Orbax reads each
        device's slice directly. Returns (state, step); `data_iter` is restored in place.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target.to_dict())
        items = {"state": ocp.args.StandardRestore(abstract)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            with quiet_on_failure():  # a damaged step must not print reader-thread tracebacks
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise CheckpointError(
                f"cannot restore step {step} from {self.directory}: {e} (was it written by a "
                "run with another model or optimizer config?)") from e
        return TrainState.from_dict(restored["state"]), step

    def restore_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        return dict(self.manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))["config"])

    def wait(self) -> None:
        """Blocks until background writes are committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
