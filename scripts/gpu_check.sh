#!/usr/bin/env bash
# GPU check, for a machine with a CUDA device (a few minutes in all):
#   1. the GPU-marked tests (batched solvers on CUDA against the CPU kernels);
#   2. `gaptheory bench --device cuda` at the reference sizes, JSON kept in $OUT (or ./gpu_check_out).
# Usage: bash scripts/gpu_check.sh      (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device; nothing to check here")
print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
status=0
timeout 120 python -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tee "$out/gpu_tests.txt" || status=1
# exit 1 from bench means an accuracy check failed; the JSON is still written and rendered
timeout 240 python -m gaptheory bench --device cuda --threads 1 --json --no-progress > "$out/bench_cuda.json" || status=1
python - "$out/bench_cuda.json" <<'PY' | tee "$out/bench_cuda.txt"
import json, sys
from gaptheory.bench import render
print(render(json.load(open(sys.argv[1]))))
PY
exit $status
