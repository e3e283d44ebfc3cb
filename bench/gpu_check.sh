#!/usr/bin/env bash
# The prepared GPU check: the study networks' training throughput (study way vs tuned), the fraction of
# the GPU's peak, peak GPU memory, and one study-preset kidney network for a fixed number of epochs.
# For a GPU machine with JAX (or PyTorch) and CUDA but no TensorFlow and no network: it installs only
# the small pure-Python wheels that bench/fetch_wheels.sh put into .whl/ (keras and its few needs,
# nibabel), into /tmp/site, and runs bench/backends.py gpu on KERAS_BACKEND (default: the first installed of jax, torch, tensorflow).
#
#   here:  bench/fetch_wheels.sh             # once, on a machine with the package index (about 3 MB)
#   there: bench/gpu_check.sh [OUT_DIR]      # about 8 minutes; bench/gpu_check.sh --dry-run: minutes, on any CPU with one of the backends
#
# Results: OUT_DIR/gpu_check.json (a snapshot after every figure) and gpu_check.md.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=()
if [[ "${1:-}" == "--dry-run" ]]; then dry=(--dry-run); shift; fi
out="${1:-${OUT:-bench/results}}"
mkdir -p "$out"
python="${PYTHON:-python3}"
if ! "$python" -c "import keras, nibabel" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The backend: KERAS_BACKEND if set, else the first installed of JAX, PyTorch and TensorFlow (the GPU
# machine has JAX; a dry run on this project's default install uses TensorFlow).
if [[ -z "${KERAS_BACKEND:-}" ]]; then
    KERAS_BACKEND=$("$python" -c "import importlib.util as u; print(next((b for b in ('jax', 'torch', 'tensorflow') if u.find_spec(b)), 'jax'))")
fi
export KERAS_BACKEND
# GPU_CHECK_ARGS: more options of `bench/backends.py gpu` (e.g. --data-root DIR, --tuned-batch 16).
export PYTHONUNBUFFERED=1
"$python" -c "import keras, nibabel, skimage; print('keras', keras.__version__, 'on', keras.backend.backend())" || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# shellcheck disable=SC2086
limit="${GPU_CHECK_SECONDS:-470}"  # within the 8 minutes; a dry run is not held to it (a CPU traces slowly)
[[ ${#dry[@]} -gt 0 ]] && limit="${GPU_CHECK_SECONDS:-1500}"
timeout "$limit" "$python" bench/backends.py gpu "${dry[@]}" ${GPU_CHECK_ARGS:-} --out "$out/gpu_check.json" > "$out/gpu_check.md"
status=$?
cat "$out/gpu_check.md"
exit $status
