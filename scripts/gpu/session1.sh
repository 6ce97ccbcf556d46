#!/usr/bin/env bash
# One lent-GPU session's work, as one script (the device tool gives a task 15 minutes in all):
#   1. the shapes sampler benchmark at its full default size (1000 held-out captions x 2 seeds, 5 samplers,
#      8/16/25 steps) on the shipped model and selector;
#   2. two longer-trained TCTS selectors (same 3x128 architecture, and a larger 6x256), each then benchmarked
#      with tcts and tcts-fas on the same captions/seeds: does a better selector change the TCTS results?
#   3. bench-speed on the GPU (fp16, ours vs diffusers, aMUSEd-256/512 random full-size weights).
# What happened on 2026-11-27 (H100, 16 cores): 1 and 3 finished (BENCHMARKS.md); both selector trainings ran
# at ~2 s/step (not profiled; probably launch- and CPU-bound: 64-token batches, per-row CPU draws, five bench
# processes beside them) and hit their timeout before the first export, so their benches had no selector. The longer
# selector was then trained on the CPU and benchmarked by session2.sh.
# Usage (repository root, python with torch + CUDA; codes from scripts/shapes/fit_codes.py):
#   bash scripts/gpu/session1.sh OUT_DIR CODES [BUDGET_SECONDS]
# Test it on the CPU with small sizes: DEVICE=cpu CAPTIONS=8 SEEDS=1 SEL_STEPS=4 SPEED=0 bash scripts/gpu/session1.sh ...
set -u
out=${1:?output folder}; codes=${2:?codes.safetensors}; budget=${3:-500}
device=${DEVICE:-cuda}; captions=${CAPTIONS:-1000}; seeds=${SEEDS:-2}; sel_steps=${SEL_STEPS:-3000}
batch=${BATCH:-1000}; sel_batch=${SEL_BATCH:-128}; python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
mkdir -p "$out"
left() { echo $(( budget - SECONDS > 20 ? budget - SECONDS : 20 )); }
bench() {  # bench OUT_SUBDIR LOG_NAME [args...]: units are cached in OUT_SUBDIR/units, so parallel runs of
    local name=$1 log=$2; shift 2   # different samplers into one folder, then one run of all, assemble the table
    timeout "$(left)" "$python" -m tcts bench --device "$device" --batch-size "$batch" --threads 2 \
        --captions "$captions" --seeds "$seeds" --out "$out/$name" "$@" > "$out/$log.log" 2>&1
    echo "bench $log: rc $? at ${SECONDS}s"
}
train() {  # train NAME LAYERS WIDTH HEADS, then benchmark tcts and tcts-fas with the new selector
    local name=$1
    timeout $(( budget * 42 / 100 )) "$python" scripts/shapes/train_selector.py --codes "$codes" \
        --out "$out/$name" --steps "$sel_steps" --batch-size "$sel_batch" --layers "$2" --width "$3" --heads "$4" \
        --threads 2 > "$out/$name.log" 2>&1
    echo "train $name: rc $? at ${SECONDS}s (a timeout keeps the last 250-step export)"
    for sampler in tcts tcts-fas; do
        bench "bench-$name" "bench-$name-$sampler" --samplers $sampler --selector "$out/$name/selector" &
    done
    wait
    bench "bench-$name" "bench-$name" --samplers tcts tcts-fas --selector "$out/$name/selector"
}

for sampler in purity uniform random-revoke tcts tcts-fas; do
    bench bench-shipped "bench-shipped-$sampler" --samplers $sampler &
done
train sel-3x128 3 128 4 &
train sel-6x256 6 256 8 &
wait
bench bench-shipped bench-shipped
if [ "${SPEED:-1}" = 1 ]; then
    timeout "$(left)" "$python" -m tcts bench-speed --models amused-256 amused-512 --steps 12 --repeats 1 \
        --impls ours diffusers --dtype float16 --weights /tmp/speed-weights --out "$out/speed" > "$out/speed.log" 2>&1
    echo "bench-speed: rc $? at ${SECONDS}s"
fi
