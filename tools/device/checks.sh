#!/usr/bin/env bash
# GPU checks and benchmarks for a lent machine, one stage per device call (each call may run
# 10 minutes at most). Logs go to $OUT/<stage>.log; every benchmark's last line is JSON.
# Usage (after tools/device/install.sh, docs/gpu.md): bash tools/device/checks.sh STAGE
#   env         bench env at 4096 and 8192 worlds, 160x120
#   learner     bench learner, the paper's network at 160x120
#   capacity    bench capacity on CUDA (the plan stays in /tmp for validate)
#   validate R  role R (sim | learner | dp) at the plan's predicted maximum and +10%
#   throughput  bench throughput single vs disagg, with and without the overlapped update
#               (sims and learner share the one GPU)
#   tests       the test suite on the GPU machine (CUDA-only tests run there)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
stage=${1:?stage: env | learner | capacity | validate ROLE | throughput | tests}
log="$OUT/$stage${2:+-$2}.log"
run() { echo "+ $*" | tee -a "$log"; "$@" 2>&1 | tee -a "$log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
case "$stage" in
  env)
    for n in 4096 8192; do run python3 -m dexrl bench env --device cuda --num-envs $n --resolution 160x120 --steps 50 --json; done ;;
  learner)
    run python3 -m dexrl bench learner --device cuda --resolution 160x120 --num-envs 1024 --iterations 3 --json ;;
  capacity)
    run python3 -m dexrl bench capacity --device cuda --resolution 160x120 --gpus 4 --gpu-mem-gib 48 --num-envs-probe 64 --json
    # The bench's JSON line, whatever Warp printed after it; /tmp stays while the machine is held.
    grep '^{' "$log" | tail -1 > /tmp/dexrl-plan.json ;;
  validate)  # one role per call (sim | learner | dp): each runs fresh processes at the plan's sizes
    role=${2:?validate needs a role: sim | learner | dp}
    test -s /tmp/dexrl-plan.json || { echo "run the capacity stage first, on this machine"; exit 2; }
    run python3 -c "import json, sys; from dexrl.bench.capacity import validate_plan
r = json.load(open('/tmp/dexrl-plan.json'))['160x120']
for c in validate_plan(r, '160x120', device='cuda', budget_gib=48, roles=(sys.argv[1],)): print(json.dumps(c), flush=True)" "$role" ;;
  throughput)
    for rt in "single" "disagg --sim-ranks 2" "disagg --sim-ranks 2 --overlap-update"; do
      run python3 -m dexrl bench throughput --runtime $rt --preset teacher-depth --device cuda --num-envs 2048 --iterations 3 --json
    done ;;
  tests)
    run python3 -m pytest -q -x tests ;;
  *) echo "unknown stage $stage"; exit 2 ;;
esac
