#!/usr/bin/env bash
# Do two checkouts give the same labels? Every method through the CLI, two seeds, short
# schedules, one thread (so float sums are ordered alike), on one feature store; then
# every label file compared. The check behind a refactor that must not change behaviour.
#   bash bench/same_labels.sh OLD_CHECKOUT NEW_CHECKOUT STORE WORKDIR
# (each checkout needs its compiled _C*.so in seal_fast/; the CPU kernels must be the same)
set -euo pipefail
old=$1 new=$2 store=$3 work=$4
run() {  # run CHECKOUT OUTDIR
  mkdir -p "$2"
  # SATC's epoch bound is --max-epochs since the renames (CHANGELOG.md), --epochs before
  satc_epochs=$(PYTHONPATH=$1 python -m seal_fast cluster --help | grep -q -- --max-epochs && echo --max-epochs \
                || echo --epochs)
  for seed in 0 1; do
    for args in "kmeans" "turtle --iterations 300" "seal --iterations 200 --epochs 2 --restarts 2" \
                "satc $satc_epochs 2 --restarts 2"; do
      method=${args%% *}
      # shellcheck disable=SC2086
      PYTHONPATH=$1 OMP_NUM_THREADS=1 python -m seal_fast cluster "$store" --method $args --n-clusters 10 \
        --seed $seed --out "$2/$method-$seed.npy" --quiet > /dev/null
    done
  done
}
run "$old" "$work/old" & run "$new" "$work/new" & wait
python - "$work" <<'PY'
import sys, pathlib, numpy as np
work = pathlib.Path(sys.argv[1])
same = True
for f in sorted((work / "old").glob("*.npy")):
    a, b = np.load(f), np.load(work / "new" / f.name)
    ok = np.array_equal(a, b)
    same &= ok
    print(f"{f.stem}: {'identical' if ok else f'{(a != b).mean():.1%} of labels differ'}")
sys.exit(0 if same else 1)
PY
