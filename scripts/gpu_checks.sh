#!/usr/bin/env bash
# GPU checks for `squeezer optimize --target cuda` and the ONNX backend on CUDA, in one go (under 5 minutes):
#   1. onnxruntime with the CUDA execution provider (onnxruntime-gpu replaces the CPU wheel when missing),
#   2. the GPU tests: fp16 candidates chosen by `--target auto`, IO binding, CUDA answers equal to CPU ones,
#   3. all-MiniLM-L6-v2 optimized for cuda, served on CUDA and gated against PyTorch (scripts/gpu_checks.py).
# Usage: bash scripts/gpu_checks.sh        (PYTHON=/path/to/python to use another interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
start=$(date +%s)

if [ ! -x "$PY" ]; then
    echo "== creating .venv"
    python3 -m venv .venv
    PY=.venv/bin/python
    "$PY" -m pip install --quiet -c constraints.txt -e '.[torch,test,onnx]'
fi

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

has_cuda() {
    "$PY" - <<'PYEOF'
import sys
import onnxruntime as ort
getattr(ort, "preload_dlls", lambda: None)()
sys.exit(0 if "CUDAExecutionProvider" in ort.get_available_providers() else 1)
PYEOF
}
if ! has_cuda; then
    echo "== installing onnxruntime-gpu (the CPU wheel has no CUDA provider)"
    "$PY" -m pip uninstall --quiet --yes onnxruntime
    "$PY" -m pip install --quiet -c constraints.txt "onnxruntime-gpu[cuda,cudnn]"
    has_cuda || { echo "onnxruntime-gpu installed but the CUDA provider is unavailable" >&2; exit 1; }
fi

echo "== GPU tests"
timeout 150 "$PY" -m pytest -q -rs -p no:cacheprovider tests/compiler/test_gpu.py

echo "== MiniLM for --target cuda"
timeout 150 "$PY" scripts/gpu_checks.py

echo "== all GPU checks passed in $(( $(date +%s) - start ))s"
