#!/usr/bin/env bash
# Everything a GPU machine should check, in one command, with one result file:
#   build the CUDA kernels, run the op self-check on every device, the whole test
#   suite (the CUDA parity and CUDA readiness tests, the estimators on the GPU), the
#   GPU benchmarks, and write $OUT/gpu-session.md: device, date, versions, the
#   self-check table, the test summary with every failure named, and every benchmark
#   ratio. Commit that file as is under bench/results/ (logs stay in $OUT).
# Usage (repository root, torch with CUDA installed):  OUT=gpu-out bash bench/gpu_session.sh
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FORCE_CUDA=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)}
REPORT="$OUT/gpu-session.md"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/device.txt"
if ! python -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1; then
  { echo "# GPU session $(date -u +%F): build failed"; echo; echo '```'; tail -n 60 "$OUT/build.log"; echo '```'; } \
    > "$REPORT"
  cat "$REPORT"
  exit 1
fi
python -c "import seal_fast, json; print(json.dumps(seal_fast.build_info(), indent=1))" > "$OUT/info.json"
python -m seal_fast info --check > "$OUT/check.log" 2>&1
check_rc=$?
python -m pytest -q -p no:cacheprovider -rfE tests > "$OUT/tests.log" 2>&1
tests_rc=$?
python -m pytest -q -p no:cacheprovider bench -k cuda --benchmark-json="$OUT/bench-gpu.json" > "$OUT/bench.log" 2>&1
python bench/summarize.py "$OUT/bench-gpu.json" > "$OUT/bench-gpu.md" 2>>"$OUT/bench.log"

{
  echo "# GPU session — $(date -u +%F)"
  echo
  echo "Made by \`OUT=$OUT bash bench/gpu_session.sh\` at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
  echo
  echo "device: $(cat "$OUT/device.txt")"
  echo
  echo "## Versions and build"
  echo
  echo '```json'
  cat "$OUT/info.json"
  echo '```'
  echo
  echo "## Op self-check (\`seal-fast info --check\`, exit $check_rc)"
  echo
  echo '```'
  sed -n '/^op /,$p' "$OUT/check.log"
  echo '```'
  echo
  echo "## Test suite (exit $tests_rc)"
  echo
  echo '```'
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -n 60
  echo '```'
  echo
  echo "## GPU benchmarks"
  echo
  sed '1,/^$/d' "$OUT/bench-gpu.md"
} > "$REPORT"
cat "$REPORT"
