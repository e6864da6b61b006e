#!/usr/bin/env bash
# Train on this machine's CPU, simulating N devices (default 8) so the sharded code path
# (data-parallel, FSDP, tensor meshes) runs exactly as on an accelerator slice.
#
#   launch/local_cpu.sh CONFIG WORKDIR [--config.x=y ...]
#   N_DEVICES=8 launch/local_cpu.sh configs/earthmapper_train.py:tiny /tmp/em \
#       --config.data.dir=demo_out/data \
#       --config.model.tokenizer_dir=demo_out/tokenizer_run/tokenizer \
#       --config.mesh.data=2 --config.mesh.fsdp=4
set -euo pipefail
CONFIG=${1:?usage: launch/local_cpu.sh CONFIG WORKDIR [--config.x=y ...]}
WORKDIR=${2:?usage: launch/local_cpu.sh CONFIG WORKDIR [--config.x=y ...]}
shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
N_DEVICES=${N_DEVICES:-8}

export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$N_DEVICES"
exec "$PY" -m earthmapper_jax.main --config "$CONFIG" --workdir "$WORKDIR" "$@"
