#!/usr/bin/env bash
# GPU checks and benchmarks for a lent machine (after tools/device/install.sh; docs/gpu.md
# gives the calls in order of priority). Each device call may run 10 minutes, so every
# command here has its own time limit and a stage's log keeps what finished before it.
# Logs go to $OUT/<stage>.log; every benchmark's last line is JSON.
# Usage: bash tools/device/checks.sh STAGE [ROLE ...]
#   probes       seconds: uint16 ops, RNG CPU == CUDA, pinned rounding, host syncs per env step
#   capacity     bench capacity on CUDA at 160x120 and 320x240 (the plan stays in /tmp for validate)
#   validate R.. roles (sim | learner | dp) at the plan's predicted maximum and +10%, 160x120
#   throughput   bench throughput at 160x120, 4096 worlds: single; disagg with 2 sim ranks, then
#                with --pipeline, then with --overlap-update (the ranks share the one GPU)
#   cudatests    the two CUDA-only tests
#   env          bench env at 4096 and 8192 worlds, 160x120
#   learner      bench learner, the paper's network at 160x120 and 4096 worlds
#   tests        the whole test suite (CPU simulation; minutes)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
stage=${1:?stage: probes | capacity | validate ROLE... | throughput | cudatests | env | learner | tests}
shift
log="$OUT/$stage${1:+-$(IFS=-; echo "$*")}.log"
# run LIMIT_S CMD...: one command, stopped after LIMIT_S seconds (the log says so).
run() {
  local limit=$1; shift
  echo "+ $*" | tee -a "$log"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
  local code=${PIPESTATUS[0]}
  [ "$code" = 124 ] && echo "!! stopped after $limit s" | tee -a "$log"
  return 0
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
case "$stage" in
  probes)
    run 180 python3 tools/device/probes.py ;;
  capacity)
    run 400 python3 -m dexrl bench capacity --device cuda --resolution 160x120 --resolution 320x240 \
      --gpus 4 --gpu-mem-gib 48 --num-envs-probe 64 --json
    # The bench's JSON line, whatever Warp printed after it; /tmp stays while the machine is held.
    grep '^{' "$log" | tail -1 > /tmp/dexrl-plan.json ;;
  validate)  # each role runs fresh processes at the plan's sizes (validate_plan: 240 s each)
    [ $# -gt 0 ] || { echo "validate needs roles: sim | learner | dp"; exit 2; }
    test -s /tmp/dexrl-plan.json || { echo "run the capacity stage first, on this machine"; exit 2; }
    for role in "$@"; do
      run 500 python3 -c "import json, sys; from dexrl.bench.capacity import validate_plan
r = json.load(open('/tmp/dexrl-plan.json'))['160x120']
for c in validate_plan(r, '160x120', device='cuda', budget_gib=48, roles=(sys.argv[1],)): print(json.dumps(c), flush=True)" "$role"
    done ;;
  throughput)
    for rt in "single" "disagg --sim-ranks 2" "disagg --sim-ranks 2 --pipeline" "disagg --sim-ranks 2 --overlap-update"; do
      # shellcheck disable=SC2086
      run 150 python3 -m dexrl bench throughput --runtime $rt --preset teacher-depth --device cuda \
        --resolution 160x120 --num-envs 4096 --iterations 3 --json
    done ;;
  cudatests)
    run 300 python3 -m pytest -q -p no:cacheprovider \
      tests/rl/test_storage.py::test_host_image_storage_on_cuda_round_trips \
      tests/runtime/test_distributed.py::test_overlapped_pipelined_learner_on_cuda_trains_and_resumes ;;
  env)
    for n in 4096 8192; do
      run 200 python3 -m dexrl bench env --device cuda --num-envs $n --resolution 160x120 --steps 50 --json
    done ;;
  learner)
    run 300 python3 -m dexrl bench learner --device cuda --resolution 160x120 --num-envs 4096 --iterations 3 --json ;;
  tests)
    run 560 python3 -m pytest -q -p no:cacheprovider tests ;;
  *) echo "unknown stage $stage"; exit 2 ;;
esac
