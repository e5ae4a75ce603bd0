#!/bin/bash
# GPU checks and benchmarks, run on the device machine from the repository root:
#   bash scripts/gpu_check.sh "tests attn e2e" [extra bench_attention args]
# Installs the carried wheels (.whl: diffusers and its missing deps), makes `vidaccel.kernels`
# importable without installing (the package-dir mapping), then runs the requested stages and
# writes logs and results under $OUT (default /tmp/out).
# Stages that take more than one 10-minute call keep their state in $RES (default /tmp/vidaccel-res, kept
# between calls on a warm machine) and copy their results to $OUT:
#   caches_a caches_b caches_720_dense caches_720_radial caches_720_reuse   (scripts/bench_caches.py, split in
#   five; each fits one call on an H100: ~6, ~3, ~5, ~4, ~4 min; the 720p stages need caches_a's profile
#   in $RES, or copy benchmarks/results/bench_caches_a_profile.json there)
#   freeswim_a freeswim_b                                  (scripts/bench_freeswim.py, split in two)
#   freeswim_c freeswim_d                                  (its variants vs dense: cache_steps 5, radial full branch)
#   freeswim_tests                                         (tests/test_freeswim.py -m gpu)
#   tiny                                                   (scripts/train_tiny_model.py from scratch, 3 calls)
#   vae_sweep                                              (scripts/lab_vae_sweep.py, SWEEP_VARIANTS, SWEEP_SECONDS)
#   lab                                                    (the same script, --recipe lab: 21 min of training as
#                                                           three calls, LAB_CALL_SECONDS=560 each; the call that
#                                                           finishes also runs the pixel checks, eval_lab_model.py,
#                                                           at 256 px and, with LAB_EVAL_2X=1, 2 seeds at 512 px;
#                                                           LAB_DIAGNOSE=0 leaves lab_diagnose.py to the CPU;
#                                                           LAB_RESUME=1 on the calls that continue: exits at once
#                                                           when the machine is fresh and $RES/lab is gone)
# The whole GPU test file takes ~560 s on a fresh machine (Triton compiles every autotune config), ~260 s on
# a warm one: run it as two calls, TESTS_K="test_window or whole_grid or every_autotune_config" and its negation
# (the negation needs TESTS_TIMEOUT=570 when its kernels are not compiled yet: 320 s cut it after 38 tests), or
# one call with TESTS_XDIST=N (pytest-xdist's N worker processes on the one GPU compile Triton kernels in parallel;
# carry its wheels in .whl: pip download --no-deps -d .whl pytest-xdist execnet).
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
STAGES=${1:-"tests attn e2e"}
shift || true
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/diffusers-*.whl .whl/importlib_metadata-*.whl $(ls .whl/pytest_xdist-*.whl .whl/execnet-*.whl 2>/dev/null) \
    && export PYTHONPATH=/tmp/site
fi
[ -e vidaccel/kernels ] || ln -s ../kernels vidaccel/kernels
[ -e vidaccel/pipelines ] || ln -s ../pipelines vidaccel/pipelines
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
# not under .whl: carrying .whl to the device replaces that folder there, wiping results kept between calls
RES=${RES:-/tmp/vidaccel-res}
mkdir -p "$RES"
CACHES="python3 scripts/bench_caches.py --out $RES"
for stage in $STAGES; do
  case $stage in
    tests) timeout ${TESTS_TIMEOUT:-300} python3 -m pytest tests/test_kernels_gpu.py -q ${TESTS_K:+-k "$TESTS_K"} ${TESTS_XDIST:+-n $TESTS_XDIST} -rA --durations=15 -p no:cacheprovider 2>&1 | tail -60 > "$OUT/tests.log"; tail -25 "$OUT/tests.log" ;;
    attn) timeout ${ATTN_TIMEOUT:-420} python3 scripts/bench_attention.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench_attention.log" | grep -v '^{' ;;
    variants) timeout ${VAR_TIMEOUT:-300} python3 scripts/bench_kernel_variants.py --out "$OUT/variants${VAR_TAG}.json" ${VAR_ARGS} 2>&1 | tee "$OUT/variants${VAR_TAG}.log" | cut -c1-400 ;;
    caches_a) $CACHES --tag bench_caches_a --reference "$RES/ref480.pt" \
        --methods baseline,vidaccel_kv_cache,vidaccel_reuse_profiled,vidaccel_reuse_budget,vidaccel_reuse_adaptive,vidaccel_reuse_all_blocks 2>&1 | tee "$OUT/caches_a.log" | tail -20 ;;
    caches_b) $CACHES --tag bench_caches_b --reference "$RES/ref480.pt" --profile "$RES/bench_caches_a_profile.json" \
        --methods diffusers_fbc,diffusers_magcache,diffusers_taylorseer,diffusers_pab 2>&1 | tee "$OUT/caches_b.log" | tail -20 ;;
    caches_720_dense) $CACHES --tag bench_caches_720p_dense --methods "" --profile "$RES/bench_caches_a_profile.json" \
        --stack-720p --methods-720p dense --reference-720p "$RES/ref720.pt" 2>&1 | tee "$OUT/caches_720d.log" | tail -8 ;;
    caches_720_radial) $CACHES --tag bench_caches_720p_radial --methods "" --profile "$RES/bench_caches_a_profile.json" \
        --stack-720p --methods-720p radial --reference-720p "$RES/ref720.pt" 2>&1 | tee "$OUT/caches_720_radial.log" | tail -6 ;;
    caches_720_reuse) $CACHES --tag bench_caches_720p_reuse --methods "" --profile "$RES/bench_caches_a_profile.json" \
        --stack-720p --methods-720p radial_reuse_profiled,radial_reuse_budget --reference-720p "$RES/ref720.pt" 2>&1 | tee "$OUT/caches_720_reuse.log" | tail -8 ;;
    freeswim_a) python3 scripts/bench_freeswim.py --out "$RES" --methods dense,reference 2>&1 | tee "$OUT/freeswim_a.log" | grep -v '^{' | tail -20 ;;
    freeswim_b) python3 scripts/bench_freeswim.py --out "$RES" --methods vidaccel,vidaccel_offload --append 2>&1 | tee "$OUT/freeswim_b.log" | grep -v '^{' | tail -20 ;;
    # the configurations beyond the default, against dense on the same warm machine (bench_freeswim_variants.*)
    freeswim_c) python3 scripts/bench_freeswim.py --out "$RES" --tag bench_freeswim_variants --methods dense,vidaccel,vidaccel_cache5 2>&1 | tee "$OUT/freeswim_c.log" | grep -v '^{' | tail -20 ;;
    freeswim_d) python3 scripts/bench_freeswim.py --out "$RES" --tag bench_freeswim_variants --methods vidaccel_radial_full,vidaccel_radial_full_cache5 --append 2>&1 | tee "$OUT/freeswim_d.log" | grep -v '^{' | tail -20 ;;
    freeswim_tests) timeout ${TESTS_TIMEOUT:-300} python3 -m pytest tests/test_freeswim.py -q -m gpu -rA -p no:cacheprovider 2>&1 | tail -30 | tee "$OUT/tests_freeswim.log" ;;
    tiny) # one <=10-min call of the from-scratch tiny-model recipe (25 min of training: three calls on one warm
          # machine resume it); every call exports the folder and packs it with the logs into $OUT/tiny.tar.*
      python3 scripts/train_tiny_model.py --work "$RES/tiny" --out "$RES/tiny-wan" --call-time-limit ${TINY_CALL_SECONDS:-575} \
        --ckpt-every 500 --log-every 50 2>&1 | grep --line-buffered -v -i warn | tee -a "$OUT/train_tiny.log" \
        | grep --line-buffered -v "step [0-9]*/" | cut -c1-300
      grep "step [0-9]*/" "$OUT/train_tiny.log" | tail -3
      (cd "$RES" && tar cf - tiny-wan tiny/*.json tiny/*.csv) | split -b 15M - "$OUT/tiny.tar." ;;
    vae_sweep) # scripts/lab_vae_sweep.py into $RES (a following lab stage trains with its best row, see below)
      (cd scripts && timeout ${SWEEP_TIMEOUT:-420} python3 lab_vae_sweep.py --seconds ${SWEEP_SECONDS:-40} \
         ${SWEEP_VARIANTS:+--variants $SWEEP_VARIANTS} --out "$RES/vae_sweep" ${SWEEP_ARGS}) 2>&1 | grep -v -i warn | grep '^{\|Error' | cut -c1-400
      cp "$RES"/vae_sweep.* "$OUT"/ ;;
    lab) # one <=10-min call of the lab-model recipe (resumed by the next call); each call
         # exports the folder and packs it with the logs into $OUT/lab.tar.*; the call that finishes evaluates it.
         # With a vae_sweep result in $RES (an earlier call on this machine), the VAE trains with its best row.
      if [ -n "$LAB_RESUME" ] && [ ! -f "$RES/lab/ckpt_dit.pt" ]; then
        # a call meant to continue found a fresh machine: stop at once instead of training from scratch
        echo "lab: LAB_RESUME is set but $RES/lab/ckpt_dit.pt is missing (a fresh machine): carry the last" \
             "export and pass LAB_ARGS=\"--resume-export DIR\" instead" | tee -a "$OUT/train_lab.log"
        exit 3
      fi
      if [ -f "$RES/vae_sweep.json" ]; then
        LAB_ARGS="$LAB_ARGS $(cd scripts && python3 lab_vae_sweep.py --best-args "$RES/vae_sweep.json")"
        echo "lab: VAE arguments from the sweep: $LAB_ARGS" | tee -a "$OUT/train_lab.log"
      fi
      python3 scripts/train_tiny_model.py --recipe lab --work "$RES/lab" --out "$RES/lab-wan" \
        --call-time-limit ${LAB_CALL_SECONDS:-560} --ckpt-every 500 --log-every 50 ${LAB_ARGS} 2>&1 \
        | grep --line-buffered -v -i warn | tee -a "$OUT/train_lab.log" | grep --line-buffered -v "step [0-9]*/" | cut -c1-300
      grep "step [0-9]*/" "$OUT/train_lab.log" | tail -3
      # pack the weights before evaluating: a call cut at its limit still returns them
      (cd "$RES" && tar cf - lab-wan lab/*.json lab/*.csv) | split -b 15M - "$OUT/lab.tar."
      if grep -q '"finished": true' "$RES/lab/dit_done.json" 2>/dev/null; then
        (cd scripts && timeout ${LAB_EVAL_TIMEOUT:-120} python3 eval_lab_model.py --model "$RES/lab-wan" \
           --out "$OUT/eval_lab.json" --samples "$OUT/samples.png" ${LAB_EVAL_ARGS}) 2>&1 | grep -v -i warn | tail -12 \
           | tee "$OUT/eval_lab.log"
        if [ -n "$LAB_EVAL_2X" ]; then  # twice the native size, dense attention: what FreeSwim improves on
          (cd scripts && timeout ${LAB_EVAL_TIMEOUT:-120} python3 eval_lab_model.py --model "$RES/lab-wan" \
             --out "$OUT/eval_lab_512.json" --height 512 --width 512 --seeds 2 --samples "$OUT/samples_512.png") 2>&1 \
             | grep -v -i warn | tail -8 | tee "$OUT/eval_lab_512.log"
        fi
        [ "${LAB_DIAGNOSE:-1}" = 0 ] || (cd scripts && timeout 120 python3 lab_diagnose.py --model "$RES/lab-wan" --size 33 256 256 --clips 8 \
           --out "$OUT/diagnose_256.json") 2>&1 | grep -v -i warn | tail -10
      fi ;;
    e2e) timeout ${E2E_TIMEOUT:-400} python3 scripts/bench_e2e.py --out "$OUT" ${E2E_ARGS} 2>&1 | tee "$OUT/bench_e2e.log" | tail -15 ;;
  esac
done
find "$RES" -maxdepth 1 -type f ! -name '*.pt' -exec cp {} "$OUT/" \;
# a call returns at most 8 files: past that, everything but the split archives goes into one results.tar
if [ "$(ls "$OUT" | wc -l)" -gt 8 ]; then
  (cd "$OUT" && tar cf results.tar --remove-files $(ls | grep -v '\.tar\.[a-z][a-z]$'))
fi
ls -la "$OUT"
