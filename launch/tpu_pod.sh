#!/usr/bin/env bash
# Train EarthMapper-JAX on a Cloud TPU VM pod slice (every host runs the same program).
#
#   launch/tpu_pod.sh create      # create the TPU VM slice
#   launch/tpu_pod.sh copy        # copy this checkout to every worker (git-tracked files)
#   launch/tpu_pod.sh setup       # venv + jax[tpu] + the package on every worker; mount GCS data
#   launch/tpu_pod.sh train [--config.x=y ...]   # run the trainer on all workers at once
#   launch/tpu_pod.sh ssh | delete
#
# Settings (environment variables):
#   TPU_NAME=earthmapper ZONE=us-central2-b ACCEL=v4-32 TPU_VERSION=tpu-ubuntu2204-base
#   CONFIG=configs/earthmapper_train.py:cnsatmap_d24
#   WORKDIR=gs://BUCKET/runs/em_d24        checkpoints (Orbax writes gs:// directly), metrics
#   DATA_BUCKET=BUCKET                     mounted read-only at /gcs/BUCKET with gcsfuse (Grain
#                                          reads local paths), e.g. /gcs/BUCKET/cnsatmap_tokens
# Example:
#   DATA_BUCKET=my-bucket WORKDIR=gs://my-bucket/runs/d24 launch/tpu_pod.sh train \
#     --config.data.tokens_dir=/gcs/my-bucket/cnsatmap_tokens \
#     --config.model.tokenizer_dir=/gcs/my-bucket/ckpt/vae \
#     --config.model.var_init=/gcs/my-bucket/ckpt/var_d24 --config.mesh.fsdp=-1 --config.mesh.data=1
set -euo pipefail

TPU_NAME=${TPU_NAME:-earthmapper}
ZONE=${ZONE:-us-central2-b}
ACCEL=${ACCEL:-v4-32}
TPU_VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
CONFIG=${CONFIG:-configs/earthmapper_train.py:cnsatmap_d24}
WORKDIR=${WORKDIR:?set WORKDIR=gs://BUCKET/runs/NAME}
DATA_BUCKET=${DATA_BUCKET:-}
REMOTE_DIR=earthmapper-jax

on_all() {  # run a command on every worker of the slice
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command "$1"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="$ACCEL" --version="$TPU_VERSION"
    ;;
  copy)
    root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
    tmp=$(mktemp -d)
    git -C "$root" ls-files -z --cached --others --exclude-standard \
      | tar -C "$root" --null -T - -czf "$tmp/code.tgz"
    gcloud compute tpus tpu-vm scp "$tmp/code.tgz" "$TPU_NAME:~/code.tgz" --zone="$ZONE" --worker=all
    on_all "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && tar -xzf ~/code.tgz -C ~/$REMOTE_DIR"
    rm -rf "$tmp"
    ;;
  setup)
    # Python >= 3.12 is required by jax 0.12; the deadsnakes PPA provides it on Ubuntu 22.04.
    on_all "set -e; cd ~/$REMOTE_DIR
      command -v python3.12 >/dev/null || { sudo add-apt-repository -y ppa:deadsnakes/ppa &&
        sudo apt-get update && sudo apt-get install -y python3.12 python3.12-venv; }
      python3.12 -m venv .venv && .venv/bin/pip install -q --upgrade pip
      .venv/bin/pip install -q -e . 'jax[tpu]'"
    if [ -n "$DATA_BUCKET" ]; then
      on_all "set -e; command -v gcsfuse >/dev/null || { echo 'install gcsfuse first:
        https://cloud.google.com/storage/docs/gcsfuse-install' >&2; exit 1; }
        sudo mkdir -p /gcs/$DATA_BUCKET && sudo chown \$USER /gcs/$DATA_BUCKET
        mountpoint -q /gcs/$DATA_BUCKET || gcsfuse -o ro --implicit-dirs $DATA_BUCKET /gcs/$DATA_BUCKET"
    fi
    ;;
  train)
    # EARTHMAPPER_DISTRIBUTED=1: jax.distributed.initialize() before any device is touched
    # (auto-detects the pod's coordinator). Every worker logs; only process 0 writes metrics.
    extra=$(printf ' %q' "$@")
    on_all "cd ~/$REMOTE_DIR && EARTHMAPPER_DISTRIBUTED=1 .venv/bin/python -m earthmapper_jax.main \
      --config $CONFIG --workdir $WORKDIR --config.progress=False $extra 2>&1 | tee -a ~/train.log"
    ;;
  ssh)
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
    ;;
  *)
    sed -n '2,22p' "$0"
    ;;
esac
