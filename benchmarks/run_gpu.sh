#!/usr/bin/env bash
# Issue 6 on one GPU: EarthMapper-JAX against the official PyTorch VAR, same card, same run.
#
# 1. HERE (the dev machine, once per session; nothing of it is committed):
#      a. the VAR checkout: the search tool's `fetch` of github:FoundationVision/VAR returns a
#         git directory, e.g. /work/.mirror/FoundationVision+VAR/repo; then
#           benchmarks/run_gpu.sh prepare /work/.mirror/FoundationVision+VAR/repo
#         which writes its HEAD into third_party/VAR (ignored by .gitignore) with
#           git --git-dir=GITDIR --work-tree=third_party/VAR checkout HEAD -- .
#         and downloads the one wheel the device image lacks (ml_collections, pure Python)
#         into .whl/ (ignored). The device machine cannot reach any registry.
#      b. nothing else: the device image has python3 3.12 with torch, jax[cuda] 0.11.x, flax,
#         optax, numpy, absl-py, PyYAML, pillow, tqdm; the project is used from the
#         source tree (PYTHONPATH=.), not pip-installed (grain / tensorflow-datasets / crc32c,
#         which `pip install -e .` would want, are not needed by the benchmark and are absent).
#
# 2. THE DEVICE CALL (one call, ~6 min on an H200; timeout leaves room for the hard limits):
#      run(command="bash benchmarks/run_gpu.sh device", carry=["third_party/VAR", ".whl"],
#          kind="nvidia-h200", timeout_s=590)
#    Results come back under $OUT: table.md, results.json, log.txt and a jax.profiler trace of
#    the VAR-d16 training step (profile-var-d16-train-tok.xplane.pb; open with xprof).
#    Extra flags after `device` go to gpu_vs_pytorch.py, e.g. `device --quick` (d16 only).
#    Then, if status says >= 5 min of device time is left, the lever sweep (JAX side only,
#    VAR-d16: base configuration plus one row per lever; ~3-4 min):
#      run(command="bash benchmarks/run_gpu.sh levers", carry=["third_party/VAR", ".whl"],
#          timeout_s=420)
#    and give_back() after the last call. Each call first prints what the image holds.
#
# 3. HERE again: copy the table into benchmarks/RESULTS.md ("## GPU vs PyTorch VAR (issue 6)")
#    with the date, the card and the command.
#
# CPU end-to-end check of the same script (tiny shapes, both sides; not performance):
#      .venv/bin/python benchmarks/gpu_vs_pytorch.py --cpu-smoke --var-dir /work/var_ref \
#          --torch-python /work/refenv/bin/python --out /tmp/gvp_smoke
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
  gitdir="${2:?usage: run_gpu.sh prepare GIT_DIR_OF_FETCHED_VAR}"
  set -e
  rm -rf third_party/VAR && mkdir -p third_party/VAR
  git --git-dir="$gitdir" --work-tree=third_party/VAR checkout HEAD -- .
  echo "third_party/VAR at $(git --git-dir="$gitdir" rev-parse HEAD)"
  py=.venv/bin/python; [ -x "$py" ] || py=python3
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0
  ls -la .whl
  du -sh third_party/VAR .whl
  ;;
device|levers)
  mode="$1"
  shift
  OUT="${OUT:-$PWD/gpu_vs_pytorch_out}"
  mkdir -p "$OUT"
  PY="${PY:-python3}"            # the image's python3 holds torch and jax
  TORCH_PY="${TORCH_PY:-$PY}"
  [ -f third_party/VAR/models/var.py ] || { echo "third_party/VAR missing: run 'run_gpu.sh prepare' here and carry it"; exit 2; }
  missing=$($PY -c 'import importlib.util as u; print(" ".join(m for m in ("ml_collections", "flax", "optax", "jax") if u.find_spec(m) is None))')
  if [ -n "$missing" ]; then
    echo "image lacks: $missing; installing the carried wheels"
    ls .whl/*.whl >/dev/null 2>&1 || { echo ".whl/ is empty: carry it (run_gpu.sh prepare)"; exit 2; }
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  export PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true
  $PY -c 'import sys, jax, flax, optax, ml_collections; print("python", sys.version.split()[0], "jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__)' || exit 2
  $TORCH_PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' || exit 2
  if [ "$mode" = levers ]; then
    # One row per lever on VAR-d16 (batch 64 training, batch-1 sampling), same process family,
    # so the differences are the levers' (the base row is the default configuration).
    set -- --skip-torch --models var-d16 --cases train-tok,train-pretok,sample1 --budget-s 330 \
      --variant-cases var-d16-train-pretok,var-d16-sample-b1 \
      --variant "xla:attention=xla|var-d16-train-pretok" \
      --variant "xla_remat:attention=xla,remat=dots_no_batch|var-d16-train-pretok" \
      --variant "remat_dots:remat=dots_no_batch|var-d16-train-pretok" \
      --variant "noscan:scan=0" \
      --variant "fp32:dtype=float32" \
      --variant "tok_bf16:tok_dtype=bfloat16|var-d16-train-tok" \
      --variant "sample_cudnn:sample_attention=cudnn|var-d16-sample-b1" "$@"
  fi
  [ "$mode" = device ] && set -- --profile var-d16-train-tok "$@"  # trace -> $OUT (xprof)
  $PY benchmarks/gpu_vs_pytorch.py --var-dir third_party/VAR --torch-python "$TORCH_PY" \
    --jax-python $PY --out "$OUT" --compile-cache /tmp/jax_cc "$@" 2>&1 | tee "$OUT/log.txt"
  exit "${PIPESTATUS[0]}"
  ;;
*)
  sed -n '2,40p' "$0"
  exit 2
  ;;
esac
