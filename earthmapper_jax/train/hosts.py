"""Multi-host runs: starting `jax.distributed` and the decisions every process must share.

    maybe_initialize_distributed(config)   config.distributed (or EARTHMAPPER_DISTRIBUTED=1):
                                           meet at config.cluster, or where JAX detects a TPU
                                           pod / Slurm; a missing process stops the job in
                                           config.cluster.init_timeout_s with one line
    all_have(flag)     true everywhere iff true on every process (e.g. "I have another batch")
    all_agree(flag)    process 0's flag, everywhere (e.g. "the time budget is spent")

Every process must take the same branch wherever a collective follows (a train or eval step, a
checkpoint save): one that runs a step more than the others waits for them forever.
"""

from __future__ import annotations

import math
import os
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from earthmapper_jax.errors import print_error_line
from earthmapper_jax.train.preflight import CLUSTER_FIELDS

# JAX gives up this much after the watchdog: XLA aborts the process (a C++ fatal error and a
# stack trace) when its initialization times out, so the watchdog speaks first.
_JAX_TIMEOUT_GRACE_S = 30


def maybe_initialize_distributed(config) -> None:
    """Starts multi-host JAX when the config or env asks for it.

    Must run before anything touches a device. With config.cluster's coordinator_address,
    num_processes and process_id set (train/preflight.check_cluster checks them), the processes
    meet there (any machines, localhost included); unset, `jax.distributed.initialize()`
    auto-detects TPU pods and Slurm. On a single host it would raise, so it is opt-in. A process
    that has not met all the others within config.cluster.init_timeout_s prints one line and
    exits with status 1: a missing host stops the job, never leaves the others waiting.
    """
    want = bool(config.get("distributed", False)) or os.environ.get("EARTHMAPPER_DISTRIBUTED") == "1"
    if not want or jax.distributed.is_initialized():
        return
    cluster = config.get("cluster", None) or {}
    kwargs = {k: cluster.get(k) for k in CLUSTER_FIELDS if cluster.get(k, None) is not None}
    timeout = float(cluster.get("init_timeout_s", 300))
    where = kwargs.get("coordinator_address", "the auto-detected coordinator")
    who = (f"process {kwargs['process_id']} of {kwargs['num_processes']}"
           if "process_id" in kwargs else "this process")

    def give_up():
        print_error_line(
            f"train: error: {who} did not meet all the other processes at {where} within "
            f"{timeout:g} s (config.cluster.init_timeout_s): start every process with the same "
            "coordinator_address and num_processes, each with its own process_id")
        os._exit(1)  # the main thread is blocked inside XLA's connect, which cannot be interrupted

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            **kwargs, initialization_timeout=math.ceil(timeout) + _JAX_TIMEOUT_GRACE_S)
    finally:
        watchdog.cancel()


def all_have(flag: bool) -> bool:
    """True on every process if `flag` is true on every process."""
    if jax.process_count() == 1:
        return flag
    return bool(np.min(multihost_utils.process_allgather(np.int32(flag))))


def all_agree(flag: bool) -> bool:
    """True on every process if it is true on process 0 (hosts must stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))
