#!/usr/bin/env bash
# The GPU check, in one go (a few minutes on a machine with an NVIDIA GPU, numba-cuda, PyTorch):
#   bash benchmarks/gpu_check.sh [OUTDIR]
# 1. the CUDA tests on the device (tests/cuda: the simulator's cases plus the GPU-only module);
# 2. benchmarks/gpu.py (16384x4096 float32, against PyTorch eager and torch.compile).
# Wheels in .whl/ (lark, where the machine lacks it; NumPy 2.3, where the machine's NumPy is newer
# than its numba-cuda takes: NumPy 2.5 has no np.row_stack, which numba-cuda 0.30.4 overloads on
# import, and every CUDA kernel failed to load) are installed to /tmp/site first, ahead of the
# machine's own packages.
set -u
OUTDIR=${1:-${OUT:-/tmp/actdsl-gpu}}
mkdir -p "$OUTDIR"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} ACTDSL_CACHE_DIR=/tmp/actdsl-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - <<'PY'
import importlib
for m in ("numpy", "numba", "numba_cuda", "sympy", "lark", "torch"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:
        print(m, "missing:", e)
PY
start=$(date +%s)
timeout ${TEST_SECONDS:-200} env ACTDSL_CUDA_TESTS=1 python3 -m pytest -q -n 8 -p no:cacheprovider \
    ${TESTS:-tests/cuda} 2>&1 | tee "$OUTDIR/gpu_tests.log" | tail -25
echo "tests: $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout ${BENCH_SECONDS:-260} python3 benchmarks/gpu.py --json "$OUTDIR/gpu.json" \
    --compile-budget ${COMPILE_BUDGET:-80} 2>&1 | tee "$OUTDIR/gpu_bench.txt"
echo "bench: $(( $(date +%s) - start )) s"
