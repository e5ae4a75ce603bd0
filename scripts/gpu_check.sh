#!/bin/bash
# GPU check for the Triton kernel work, run on the device machine from the repository root:
#   bash scripts/gpu_check.sh "tests attn e2e" [extra bench_attention args]
# Installs the carried wheels (.whl: diffusers and its missing deps), makes `vidaccel.kernels`
# importable without installing (the package-dir mapping), then runs the requested stages and
# writes logs and results under $OUT (default /tmp/out).
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
STAGES=${1:-"tests attn e2e"}
shift || true
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/diffusers-*.whl .whl/importlib_metadata-*.whl && export PYTHONPATH=/tmp/site
fi
[ -e vidaccel/kernels ] || ln -s ../kernels vidaccel/kernels
[ -e vidaccel/pipelines ] || ln -s ../pipelines vidaccel/pipelines
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
for stage in $STAGES; do
  case $stage in
    tests) timeout ${TESTS_TIMEOUT:-300} python3 -m pytest tests/test_kernels_gpu.py -q ${TESTS_K:+-k "$TESTS_K"} -rA --durations=15 -p no:cacheprovider 2>&1 | tail -60 > "$OUT/tests.log"; tail -25 "$OUT/tests.log" ;;
    attn) timeout ${ATTN_TIMEOUT:-420} python3 scripts/bench_attention.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench_attention.log" | grep -v '^{' ;;
    variants) timeout ${VAR_TIMEOUT:-300} python3 scripts/bench_kernel_variants.py --out "$OUT/variants.json" 2>&1 | tee "$OUT/variants.log" | cut -c1-400 ;;
    e2e) timeout ${E2E_TIMEOUT:-400} python3 scripts/bench_e2e.py --out "$OUT" 2>&1 | tee "$OUT/bench_e2e.log" | tail -15 ;;
  esac
done
ls -la "$OUT"
