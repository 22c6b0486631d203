"""`dexrl bench capacity`: a memory model of each role and the paper's Table I (max worlds per GPU,
data-parallel vs disaggregated), measured on the current device.

Parts (bytes; "per world" = per simulated environment, N worlds on one GPU), in `measure`:
  physics     MuJoCo Warp model + data + step scratch (Warp's allocation tracker), fitted as
              fixed + a N + b N^2 from three world counts (b > 0: contact buffers sized nconmax * N).
  render      CameraRig depth: context, BVHs, rays, buffers (tracked the same way).
  env         GraspEnv's torch tensors: peak live bytes over construction, reset and two steps.
  transit     one world's message per step between a sim rank and the learner (`transit_bytes_per_world`).
  storage     rollout storage per env (`bytes_per_env`); policy state: the recurrent carry per env.
  update      bytes autograd saves per minibatch env (exactly linear); backward temporaries that do not
              grow with the minibatch go into learner fixed. A minibatch is N / num_minibatches envs.
  inference   peak live bytes of one `model.act` on N envs.
  learner fixed  params + Adam (3 x params) + the larger of the optimizer step's peak and the update's excess.
  sim overhead / context  parameters (`sim_overhead_gib` 1.0 on simulating GPUs, `context_gib` 0.5 on all).
Torch bytes: a dispatch-mode tracker on CPU (float32), the CUDA allocator's peaks on CUDA (bf16 autocast).

Roles (budget = gpu_mem_bytes per GPU), in `plan`:
  dp rank      context + sim overhead + sim fixed + learner fixed
               + N (physics + render + env + storage + policy state) + b N^2 + max(update, inference)
  sim rank     context + sim overhead + sim fixed + N (physics + render + env + transit) + b N^2
  learner      context + learner fixed + N (storage + policy state + transit) + max(update, inference)
DP: total = gpus x N_dp. Disaggregated: gpus - 1 sim ranks and one learner, each sim rank at
N = min(N_sim, N_learner / (gpus - 1)); counts rounded down to `multiple` (default 64). With no
fixed costs the ratio is <= 1: disaggregation wins only by not paying fixed costs on every GPU.

Validating on a lent GPU (`validate`): `validate_plan(result, resolution, device="cuda", budget_gib=48)`
runs each role at its predicted maximum and 10 % above, each in a fresh process, with a ballast
tensor making a larger card behave like a `budget_gib` one. Record the table in docs/results.md.
"""

from __future__ import annotations

from dexrl.bench.capacity.measure import (
    NUM_SYNERGIES,
    TorchLiveBytes,
    WarpBytes,
    fit_linear,
    fit_quadratic,
    measure_learner,
    measure_parts,
    measure_sim,
    torch_peak_bytes,
    warp_array_bytes,
)
from dexrl.bench.capacity.plan import (
    AUX_FLOATS,
    GIB,
    MIB,
    Budget,
    Parts,
    dp_rank_bytes,
    format_table,
    learner_rank_bytes,
    learner_transient_bytes,
    max_worlds,
    parts_json,
    plan,
    policy_state_bytes_per_env,
    sim_rank_bytes,
    transit_bytes_per_world,
)
from dexrl.bench.capacity.validate import ROLES, validate_plan, validate_role

__all__ = [
    "AUX_FLOATS", "GIB", "MIB", "NUM_SYNERGIES", "ROLES",
    "Budget", "Parts", "TorchLiveBytes", "WarpBytes",
    "dp_rank_bytes", "fit_linear", "fit_quadratic", "format_table", "learner_rank_bytes",
    "learner_transient_bytes", "max_worlds", "measure_learner", "measure_parts", "measure_sim",
    "parts_json", "plan", "policy_state_bytes_per_env", "run_capacity", "sim_rank_bytes",
    "torch_peak_bytes", "transit_bytes_per_world", "validate_plan", "validate_role", "warp_array_bytes",
]


def run_capacity(resolutions: list[str], gpus: int, gpu_mem_gib: float, device: str = "cpu",
                 preset: str = "teacher-depth", num_envs_probe: int = 2, sim_overhead_gib: float = 1.0,
                 context_gib: float = 0.5, multiple: int = 64, minibatch_envs: int | None = None) -> tuple[str, dict]:
    """Measure and plan every resolution: (the tables, the JSON object for the last line)."""
    budget = Budget(gpus, gpu_mem_gib * GIB, sim_overhead_gib * GIB, context_gib * GIB, multiple, minibatch_envs)
    tables, out = [], {"setup": {"device": device, "preset": preset, "gpus": gpus, "gpu_mem_gib": gpu_mem_gib,
                                 "sim_overhead_gib": sim_overhead_gib, "context_gib": context_gib,
                                 "multiple": multiple, "minibatch_envs": minibatch_envs}}
    for res in resolutions:
        parts = measure_parts(res, preset, device, num_envs_probe)
        result = plan(parts, budget)
        tables.append(format_table(parts, budget, result))
        out[parts.resolution] = {**result, "parts": parts_json(parts)}
    return "\n".join(tables), out
