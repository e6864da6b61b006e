#!/usr/bin/env bash
# Train on one GPU (or one GPU host with several GPUs: the mesh spans all local devices).
#
#   launch/single_gpu.sh CONFIG WORKDIR [--config.x=y ...]
#   launch/single_gpu.sh configs/earthmapper_train.py:cnsatmap_d16 runs/d16 \
#       --config.data.tokens_dir=/data/cnsatmap_tokens --config.model.tokenizer_dir=/ckpt/vae \
#       --config.model.var_init=/ckpt/var_d16 --config.batch_size=64
#
# Needs `pip install -e . "jax[cuda12]"` (or cuda13) in .venv.
set -euo pipefail
CONFIG=${1:?usage: launch/single_gpu.sh CONFIG WORKDIR [--config.x=y ...]}
WORKDIR=${2:?usage: launch/single_gpu.sh CONFIG WORKDIR [--config.x=y ...]}
shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}

# JAX preallocates 75 % of GPU memory by default; training wants nearly all of it.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-true}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
# Overlap collectives with compute when several local GPUs form the mesh.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}

# EarthMapper configs leave model.attention=None: JAX picks cuDNN fused attention on GPU for
# bf16 (the XLA path materialises the L x L scores and runs out of memory at d16+); force it
# with --config.model.attention=cudnn.
exec "$PY" -m earthmapper_jax.main --config "$CONFIG" --workdir "$WORKDIR" "$@"
