"""Observability: JSONL metrics on process 0, throughput and MFU, progress-bar fields."""

from __future__ import annotations

import json
import math
import time

import jax
import numpy as np
from etils import epath

from earthmapper_jax.io.files import is_remote, write_text

# Dense bf16 peak FLOP/s per device, by `device_kind` prefix (vendor datasheets).
PEAK_FLOPS = {
    "TPU v6": 918e12, "TPU v5p": 459e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
    "TPU v5": 459e12, "TPU v4": 275e12, "TPU v3": 123e12, "TPU v2": 45e12,
    "NVIDIA H200": 989e12, "NVIDIA H100": 989e12, "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12, "NVIDIA A10": 125e12, "NVIDIA GeForce RTX 4090": 165e12,
}


def peak_flops_per_device(device=None) -> float | None:
    """Datasheet bf16 peak of `device` (None when unknown, e.g. CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    for prefix, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if kind.startswith(prefix):
            return flops
    return None


def compiled_flops(compiled) -> float | None:
    """FLOPs XLA counts for one call of a compiled function (per device program)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports costs
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _scalar(v):
    v = np.asarray(v)
    if v.size != 1:
        return v.tolist()
    v = v.item()
    return v if isinstance(v, (int, str)) else float(v)


class JsonlWriter:
    """One JSON object per line ({"step": s, name: value, ...}); process 0 only.

    Local files are appended to line by line. On an object store (gs://) the file is rewritten
    whole, at most every `remote_flush_s` seconds and on `close()`.
    """

    def __init__(self, path, enabled: bool | None = None, remote_flush_s: float = 30.0):
        self.path = epath.Path(path)
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.remote = is_remote(path)
        self.remote_flush_s = remote_flush_s
        self._lines, self._last_flush = None, 0.0
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.remote:
                self._lines = self.path.read_text().splitlines() if self.path.exists() else []

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step)}
        record.update({k: _scalar(v) for k, v in metrics.items()})
        line = json.dumps(record)
        if self.remote:
            self._lines.append(line)
            if time.monotonic() - self._last_flush > self.remote_flush_s:
                self.flush()
            return
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()

    def flush(self) -> None:
        if self.enabled and self.remote:
            write_text(self.path, "".join(l + "\n" for l in self._lines))
            self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()

    def truncate_after(self, step: int) -> None:
        """Drops records with step > `step` (written after the checkpoint a run resumes from),
        so that a resumed run's history equals an uninterrupted one. Atomic rewrite."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if rec.get("step", 0) <= step:
                keep.append(line)
        if self.remote:
            self._lines = keep
        write_text(self.path, "".join(l + "\n" for l in keep))
        self._last_flush = time.monotonic()


def read_jsonl(path) -> list[dict]:
    """All complete records of a metrics file (local or gs://)."""
    out = []
    for line in epath.Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


class Throughput:
    """Step rate, images/s and MFU over the steps since the last `measure()`."""

    def __init__(self, global_batch: int, flops_per_step: float | None, n_devices: int,
                 peak_flops: float | None):
        self.global_batch = global_batch
        self.flops_per_step = flops_per_step
        self.total_peak = peak_flops * n_devices if peak_flops else None
        self.t0 = time.perf_counter()
        self.steps = 0

    def tick(self) -> None:
        self.steps += 1

    def measure(self) -> dict:
        now = time.perf_counter()
        dt = max(now - self.t0, 1e-9)
        out = {}
        if self.steps:
            rate = self.steps / dt
            out = {"perf/steps_per_s": rate, "perf/images_per_s": rate * self.global_batch}
            if self.flops_per_step:
                achieved = rate * self.flops_per_step
                out["perf/tflops"] = achieved / 1e12
                if self.total_peak:
                    out["perf/mfu"] = achieved / self.total_peak
        self.t0, self.steps = now, 0
        return out


def format_postfix(metrics: dict) -> dict:
    """Short progress-bar fields from a metrics dict."""
    out = {}
    for key, name in (("loss", "loss"), ("perf/images_per_s", "img/s"), ("perf/mfu", "mfu"),
                      ("lr", "lr")):
        if key in metrics and isinstance(metrics[key], (int, float)) and math.isfinite(
                metrics[key]):
            v = metrics[key]
            out[name] = f"{v:.3g}" if name != "mfu" else f"{100 * v:.1f}%"
    return out
