#!/usr/bin/env bash
# Everything a GPU machine should check, in one command, logs and results under $OUT:
#   build the CUDA kernels, run the whole test suite (the CUDA parity tests and the
#   estimators on the GPU), then the GPU benchmarks and their summary table.
# Usage (repository root, torch with CUDA installed):  OUT=gpu-out bash bench/gpu_session.sh
# Copy $OUT/bench-gpu.md to bench/results/<device>-<date>.md with the device and date.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FORCE_CUDA=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
python -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -n 60 "$OUT/build.log"; echo "build failed"; exit 1; }
python -c "import seal_fast, json; print(json.dumps(seal_fast.build_info()))" | tee "$OUT/info.json"
python -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" | tail -n 30
python -m pytest -q -p no:cacheprovider bench -k cuda --benchmark-json="$OUT/bench-gpu.json" 2>&1 \
  | tee "$OUT/bench.log" | tail -n 15
python bench/summarize.py "$OUT/bench-gpu.json" | tee "$OUT/bench-gpu.md"
