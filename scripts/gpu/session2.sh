#!/usr/bin/env bash
# The second lent-GPU call of 2026-11-27 (what was left of the 15 minutes after session1.sh):
#   1. tcts and tcts-fas with a longer-trained selector (trained on the CPU: 2000 steps x batch 64, against
#      the shipped selector's 1200 x 16) on the benchmark's 1000 held-out captions, seed 0 — one process per
#      (sampler, steps), then one run to assemble the table from the cached units;
#   2. bench-speed with --draw-on-device (ours draws tokens on the GPU) against diffusers;
#   3. the GPU test of draw_on_device.
# Usage (repository root): bash scripts/gpu/session2.sh OUT_DIR SELECTOR_DIR
# CPU smoke test: DEVICE=cpu CAPTIONS=4 SPEED=0 PYTHON=.venv/bin/python bash scripts/gpu/session2.sh OUT SELECTOR
set -u
out=${1:?output folder}; selector=${2:?selector folder}; python=${PYTHON:-python3}
device=${DEVICE:-cuda}; captions=${CAPTIONS:-1000}
archive() { [ -n "${ARCHIVE:-}" ] && tar czf "$ARCHIVE" -C "$out" .; }   # after each phase: a cut run keeps it
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
mkdir -p "$out"
common=(--device "$device" --batch-size 1000 --threads 2 --captions "$captions" --seeds 1 --selector "$selector"
        --out "$out/bench-long-selector")
for sampler in tcts tcts-fas; do
    for steps in 8 16 25; do
        timeout 140 "$python" -m tcts bench "${common[@]}" --samplers $sampler --steps $steps \
            > "$out/bench-$sampler-$steps.log" 2>&1 &
    done
done
wait
timeout 60 "$python" -m tcts bench "${common[@]}" --samplers tcts tcts-fas > "$out/bench-long-selector.log" 2>&1
echo "selector bench: rc $? at ${SECONDS}s"; archive
[ "${SPEED:-1}" = 1 ] && timeout 110 "$python" -m tcts bench-speed --models amused-256 amused-512 --steps 12 --repeats 1 \
    --impls ours diffusers --dtype float16 --draw-on-device --weights /tmp/speed-weights --out "$out/speed" \
    > "$out/speed.log" 2>&1
echo "bench-speed --draw-on-device: rc $? at ${SECONDS}s"; archive
timeout 45 "$python" -m pytest -q -p no:cacheprovider tests/test_draw_on_device.py > "$out/pytest.log" 2>&1
echo "pytest: rc $? at ${SECONDS}s"; archive
