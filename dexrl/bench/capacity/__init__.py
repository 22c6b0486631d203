"""`dexrl bench capacity`: a memory model of each role and the paper's Table I (max worlds per GPU,
data-parallel vs disaggregated), measured on the current device.

Parts (bytes; "per world" = per simulated environment, N worlds on one GPU), in `measure`:
  physics     MuJoCo Warp model + data + step scratch (Warp's allocation tracker), fitted as
              fixed + a N + b N^2 from three world counts (b > 0: contact buffers sized nconmax * N).
  render      CameraRig depth: context, BVHs, rays, buffers (tracked the same way).
  env         GraspEnv's torch tensors: peak live bytes over construction, reset and two steps.
  transit     one world's message per step between a sim rank and the learner (`transit_bytes_per_world`).
  storage     rollout storage per env (`bytes_per_env`), its images' share apart (they may live in host
              memory: PPOConfig.image_storage 'host'); policy state: the recurrent carry per env.
  update      bytes autograd saves per minibatch env (exactly linear); backward temporaries that do not
              grow with the minibatch go into learner fixed. A minibatch is N / num_minibatches envs,
              its backward passes micro-batches of PPOConfig.microbatch_envs (0: one pass).
  inference   peak live bytes of one `model.act` on N envs, split into the image encoder's share
              (run in chunks of ModelConfig.encoder_chunk images) and the rest.
  learner fixed  params + Adam (3 x params) + the larger of the optimizer step's peak and the update's excess.
  sim overhead / context  parameters (`sim_overhead_gib` 1.0 on simulating GPUs, `context_gib` 0.5 on all).
Torch bytes: a dispatch-mode tracker on CPU (float32), the CUDA allocator's peaks on CUDA (bf16 autocast).

Roles (budget = gpu_mem_bytes per GPU), in `plan`:
  dp rank      context + sim overhead + sim fixed + learner fixed
               + N (physics + render + env + device storage + policy state) + b N^2 + max(update, inference)
  sim rank     context + sim overhead + sim fixed + N (physics + render + env + transit) + b N^2
  learner      context + learner fixed + N (device storage + policy state + transit) + max(update, inference)
  host         (image storage 'host') the node's learners' images: gpus x N_dp or N_disagg x images
DP: total = gpus x N_dp. Disaggregated: gpus - 1 sim ranks and one learner, each sim rank at
N = min(N_sim, N_learner / (gpus - 1)); counts rounded down to `multiple` (default 64);
`ratio_ceiling` = (gpus - 1) N_sim / DP total, what no learner can lift. With no
fixed costs and the same storage for both, the ratio is <= 1: disaggregation wins only by not
paying fixed costs on every GPU, or by moving the rollout images off its one learner GPU.

Validating on a lent GPU (`validate`): `for check in validate_plan(result, resolution, device="cuda",
budget_gib=48, roles=("sim",))` runs each role at its predicted maximum and 10 % above, each in
a fresh process (yielded as each ends: one device call may not hold every role), with a ballast
tensor making a larger card behave like a `budget_gib` one. Record the table in docs/results.md.
"""

from __future__ import annotations

import dataclasses

from dexrl.bench.capacity.measure import (
    TorchLiveBytes,
    WarpBytes,
    fit_linear,
    fit_growth,
    fit_quadratic,
    measure_learner,
    measure_parts,
    measure_sim,
    torch_peak_bytes,
    warp_array_bytes,
)
from dexrl.bench.capacity.plan import (
    GIB,
    IMAGE_STORAGE,
    MIB,
    Budget,
    Parts,
    dp_rank_bytes,
    format_table,
    learner_fixed_bytes,
    learner_rank_bytes,
    learner_transient_bytes,
    max_worlds,
    parts_json,
    plan,
    policy_state_bytes_per_env,
    sim_rank_bytes,
    storage_device_bytes,
    storage_host_bytes,
    transit_bytes_per_world,
)
from dexrl.bench.capacity.validate import ROLES, validate_plan, validate_role

__all__ = [
    "GIB", "IMAGE_STORAGE", "MIB", "ROLES",
    "Budget", "Parts", "TorchLiveBytes", "WarpBytes",
    "dp_rank_bytes", "fit_growth", "fit_linear", "fit_quadratic", "format_table", "learner_fixed_bytes",
    "learner_rank_bytes", "learner_transient_bytes", "max_worlds", "measure_learner", "measure_parts", "measure_sim",
    "parts_json", "plan", "policy_state_bytes_per_env", "run_capacity", "sim_rank_bytes",
    "storage_device_bytes", "storage_host_bytes", "torch_peak_bytes", "transit_bytes_per_world",
    "validate_plan", "validate_role", "warp_array_bytes",
]


def run_capacity(resolutions: list[str], gpus: int, gpu_mem_gib: float, device: str = "cpu",
                 preset: str = "teacher-depth", num_envs_probe: int = 2, sim_overhead_gib: float = 1.0,
                 context_gib: float = 0.5, multiple: int = 64, microbatch_envs: int | None = None,
                 encoder_chunk: int | None = None, image_storage: str | None = None,
                 host_mem_gib: float = 512.0, overlap_update: bool | None = None) -> tuple[str, dict]:
    """Measure and plan every resolution: (the tables, the JSON object for the last line). The
    learner settings default to the preset's; the headline `dp_total`, `disagg_total` and
    `ratio` use `image_storage` for both layouts, and `by_image_storage` holds both."""
    from dexrl.config.train import preset as load_preset  # noqa: PLC0415

    cfg = load_preset(preset)
    budget = Budget(gpus, gpu_mem_gib * GIB, sim_overhead_gib * GIB, context_gib * GIB, multiple,
                    cfg.ppo.microbatch_envs if microbatch_envs is None else microbatch_envs,
                    cfg.model.encoder_chunk if encoder_chunk is None else encoder_chunk,
                    image_storage or cfg.ppo.image_storage, host_mem_gib * GIB,
                    cfg.overlap_update if overlap_update is None else overlap_update)
    setup = {"device": device, "preset": preset, "gpus": gpus, "gpu_mem_gib": gpu_mem_gib, "host_mem_gib": host_mem_gib,
             "sim_overhead_gib": sim_overhead_gib, "context_gib": context_gib, "multiple": multiple,
             "microbatch_envs": budget.microbatch_envs, "encoder_chunk": budget.encoder_chunk,
             "image_storage": budget.image_storage, "overlap_update": budget.overlap_update}
    tables, out = [], {"setup": setup}
    for res in resolutions:
        parts = measure_parts(res, preset, device, num_envs_probe)
        results = {s: plan(parts, dataclasses.replace(budget, image_storage=s)) for s in IMAGE_STORAGE}
        tables.append(format_table(parts, budget, results))
        out[parts.resolution] = {**results[budget.image_storage], "by_image_storage": results, "parts": parts_json(parts)}
    return "\n".join(tables), out
