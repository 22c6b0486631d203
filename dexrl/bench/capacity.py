"""`dexrl bench capacity`: a memory model of each role and the paper's Table I (max worlds per GPU,
data-parallel vs disaggregated), measured on the current device.

Parts (bytes; "per world" = per simulated environment, N worlds on one GPU):
  physics     MuJoCo Warp model + data + the step's scratch (collision workspace), tracked by
              Warp's native allocation tracker over BatchedPhysics construction and two steps.
              Fitted as fixed + a N + b N^2 from three world counts: b is 0 when contact buffers
              are per world; b > 0 flags BatchedPhysics sizing them as nconmax * N per world.
  render      CameraRig (depth only, the teacher's camera): render context, BVHs, rays, depth
              buffers, tracked the same way over construction and one render.
  env         GraspEnv's own torch tensors: peak live bytes over construction, reset and two steps
              (observation pipeline, per-world state, default-field copies).
  transit     one world's message per step in the disaggregated loop (`transit_bytes_per_world`):
              depth float16 + proprio, critic, state-teacher vectors + reward/flags/aux + actions;
              a send buffer on the sim rank and a receive buffer on the learner.
  storage     rollout storage per env: `bytes_per_env` of the preset (same layout RolloutStorage allocates).
  policy state the learner's recurrent carry per env (float32 h and c).
  update      activations of one PPO minibatch step per env in the minibatch: the bytes autograd
              saves during evaluate + loss (saved_tensors_hooks, exactly linear), fitted at minibatches
              of p and 2p envs (T steps each). The step's measured peak (gather + forward + backward)
              exceeds them by backward temporaries that do not grow with the minibatch; the largest
              excess goes into learner fixed. A minibatch holds N / num_minibatches envs, so the
              update grows linearly in N (or is fixed when the plan gets `minibatch_envs`).
  inference   peak live bytes of one `model.act` on N envs (float16 -> float32 decode included).
  learner fixed  params + Adam (m, v) = 3 x params, plus the larger of the optimizer step's peak
              and the update's fixed excess (both hold the grads, 1 x params).
  sim overhead   Warp runtime, MuJoCo Warp modules, CUDA graphs, assets on a simulating GPU
              (`sim_overhead_gib`, default 1.0); on CUDA `measure_parts` also measures it
              (mem_get_info delta around a tiny env minus tracked bytes), on CPU it reports None.
  context     CUDA context + cuBLAS/cuDNN workspaces, paid by every GPU process (`context_gib`, 0.5).
Torch bytes are measured with a dispatch-mode tracker on CPU (every op's new storages, live and
peak; op-internal temporaries are not seen) and with the CUDA allocator's peaks on CUDA. CPU
measurements are float32 with the CPU LSTM; CUDA runs the update under bf16 autocast as training does.

Roles (budget = gpu_mem_bytes per GPU):
  dp rank      context + sim overhead + sim fixed + learner fixed
               + N (physics + render + env + storage + policy state) + b N^2 + max(update, inference)
  sim rank     context + sim overhead + sim fixed + N (physics + render + env + transit) + b N^2
  learner      context + learner fixed + N (storage + policy state + transit) + max(update, inference)
DP: every GPU is a dp rank; total = gpus x N_dp. Disaggregated: gpus - 1 sim ranks and one learner;
every sim rank gets the same N = min(N_sim, N_learner / (gpus - 1)). Counts are rounded down to a
multiple of `multiple` (default 64, which num_minibatches divides in every preset); the learner's
total to a multiple of multiple x (gpus - 1). With no fixed costs the ratio is <= 1 for any
per-world costs: disaggregation wins only by not paying the sim and learner fixed costs on every GPU.

Validating on a lent GPU: `validate_plan(result, resolution, device="cuda", budget_gib=48)` runs
`validate_role` for each role at its predicted maximum (sim: N_sim, learner: N_learner, dp: N_dp)
and at 10 % above, each in a fresh Python process. With `budget_gib` a ballast tensor first takes
everything above that budget, so a larger card (H100 80 GB) behaves like the planned one (L40S
48 GB). The prediction holds when every role fits at its maximum; 10 % above should not fit (if it
does, the model is conservative by at least that margin). Record the table in docs/results.md.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dexrl.bench.learner import learner_spec
from dexrl.config.env import parse_resolution
from dexrl.config.train import TrainConfig, preset as load_preset
from dexrl.models.actor_critic import recurrent_state_shapes
from dexrl.models.spec import ObsSpec
from dexrl.rl import PPO, RolloutStorage, autocast, build_actor_critic, bytes_per_env

GIB, MIB = 2**30, 2**20
ROLES = ("sim", "learner", "dp")
NUM_SYNERGIES = 5  # palm_synergy actions: 6 palm + 5 synergies (dexrl.envs.ik)
AUX_FLOATS = 4 + 1 + 1 + 16  # reward, terminated, truncated, episode statistics / ADR feedback


# ---- pure parts --------------------------------------------------------------------------------
def transit_bytes_per_world(width: int, height: int, proprio_dim: int = 69, critic_dim: int = 135,
                            teacher_dim: int = 87, action_dim: int = 23, aux_floats: int = AUX_FLOATS) -> int:
    """Bytes one world moves per step between a sim rank and the learner: depth float16 (H*W*2),
    float32 vectors (proprio, critic, state teacher, reward/flags/aux) and the float32 action back."""
    return width * height * 2 + 4 * (proprio_dim + critic_dim + teacher_dim + aux_floats + action_dim)


def policy_state_bytes_per_env(model_cfg) -> int:
    """The learner's live recurrent carry per env: float32 (layers, hidden) per state tensor."""
    return sum(4 * layers * hidden for layers, hidden in recurrent_state_shapes(model_cfg).values())


@dataclass
class Parts:
    """Measured memory of each part, bytes (see the module docstring)."""

    resolution: str = ""
    device: str = ""
    preset: str = ""
    num_steps: int = 16
    num_minibatches: int = 4
    physics_fixed: float = 0.0
    physics_per_world: float = 0.0
    physics_per_world_sq: float = 0.0
    render_fixed: float = 0.0
    render_per_world: float = 0.0
    env_fixed: float = 0.0
    env_per_world: float = 0.0
    transit_per_world: float = 0.0
    storage_per_env: float = 0.0
    policy_state_per_env: float = 0.0
    update_per_minibatch_env: float = 0.0
    update_peak_slope: float = 0.0  # reference: the update phase's raw two-point peak slope
    inference_per_env: float = 0.0
    params_bytes: float = 0.0
    learner_fixed: float = 0.0
    sim_overhead_measured: float | None = None
    samples: dict = field(default_factory=dict)  # raw measurements: part -> {count: bytes}

    @property
    def sim_fixed(self) -> float:
        return self.physics_fixed + self.render_fixed + self.env_fixed

    @property
    def sim_per_world(self) -> float:
        return self.physics_per_world + self.render_per_world + self.env_per_world


@dataclass(frozen=True)
class Budget:
    gpus: int
    gpu_mem_bytes: float
    sim_overhead_bytes: float = 1.0 * GIB
    context_bytes: float = 0.5 * GIB
    multiple: int = 64
    minibatch_envs: int | None = None  # fixed minibatch (envs); None: N / num_minibatches

    def __post_init__(self) -> None:
        if self.gpus < 2:
            raise ValueError(f"the plan compares data parallel with disaggregated, which needs >= 2 GPUs, got {self.gpus}")
        if self.gpu_mem_bytes <= 0 or self.multiple < 1:
            raise ValueError("gpu memory must be > 0 and multiple >= 1")


def learner_transient_bytes(p: Parts, b: Budget, n: int) -> float:
    """max(update of one minibatch, inference on all n envs)."""
    mb_envs = b.minibatch_envs if b.minibatch_envs is not None else n / p.num_minibatches
    return max(p.update_per_minibatch_env * mb_envs, p.inference_per_env * n)


def sim_rank_bytes(p: Parts, b: Budget, n: int) -> float:
    return (b.context_bytes + b.sim_overhead_bytes + p.sim_fixed + n * (p.sim_per_world + p.transit_per_world)
            + p.physics_per_world_sq * n * n)


def learner_rank_bytes(p: Parts, b: Budget, n: int) -> float:
    return (b.context_bytes + p.learner_fixed + n * (p.storage_per_env + p.policy_state_per_env + p.transit_per_world)
            + learner_transient_bytes(p, b, n))


def dp_rank_bytes(p: Parts, b: Budget, n: int) -> float:
    return (b.context_bytes + b.sim_overhead_bytes + p.sim_fixed + p.learner_fixed
            + n * (p.sim_per_world + p.storage_per_env + p.policy_state_per_env)
            + p.physics_per_world_sq * n * n + learner_transient_bytes(p, b, n))


def max_worlds(mem: Callable[[int], float], budget: float, multiple: int, limit: int = 1 << 30) -> int:
    """Largest n <= limit, a multiple of `multiple`, with mem(n) <= budget (mem non-decreasing); 0 if none."""
    if mem(multiple) > budget:
        return 0
    if mem(limit) <= budget:  # nothing grows with n: the limit stands for "unbounded"
        return limit // multiple * multiple
    lo, hi = 1, 2  # in units of `multiple`: mem(lo) fits, find hi that does not
    while mem(hi * multiple) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if mem(mid * multiple) <= budget else (lo, mid)
    return lo * multiple


def plan(p: Parts, b: Budget) -> dict:
    """Table I for one resolution: max worlds per GPU and in total, both layouts."""
    m, sims = b.gpu_mem_bytes, b.gpus - 1
    dp = max_worlds(lambda n: dp_rank_bytes(p, b, n), m, b.multiple)
    sim_max = max_worlds(lambda n: sim_rank_bytes(p, b, n), m, b.multiple)
    learner_max = max_worlds(lambda n: learner_rank_bytes(p, b, n), m, b.multiple * sims)
    per_sim = min(sim_max, learner_max // sims)
    total = per_sim * sims
    return {
        "dp_per_gpu": dp, "dp_total": dp * b.gpus, "sim_max_per_gpu": sim_max, "learner_max_total": learner_max,
        "disagg_per_gpu": per_sim, "disagg_total": total, "ratio": total / (dp * b.gpus) if dp else None,
        "disagg_bound": "learner" if learner_max // sims < sim_max else "sim",
    }


# ---- measurement helpers -------------------------------------------------------------------------
class TorchLiveBytes(TorchDispatchMode):
    """Live and peak bytes of the storages torch ops create inside the block (any device).
    Storages an op's inputs already had (parameters, Warp views, in-place results) are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, list[int]] = {}  # storage ptr -> [nbytes, live tensors]
        self.current = self.peak = 0

    def _drop(self, key: int) -> None:
        entry = self.refs.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            entry = self.refs.get(key)
            if entry is None:
                if key == 0 or key in inputs:
                    continue
                entry = self.refs[key] = [storage.nbytes(), 0]
                self.current += entry[0]
                self.peak = max(self.peak, self.current)
            entry[1] += 1
            weakref.finalize(t, self._drop, key)
        return out


def torch_peak_bytes(fn: Callable[[], object], device: torch.device) -> tuple[int, object]:
    """Peak torch bytes allocated while fn runs, above what was live before; and fn's result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, out
    with TorchLiveBytes() as live:
        out = fn()
    return live.peak, out


class WarpBytes:
    """Warp's native allocation tracker (every wp allocation, BVH and mesh internals included):
    bytes live and peak since the last `reset`, None when the runtime lacks it. A context
    manager: tracking is on inside the block (and stays on if something else turned it on)."""

    def __enter__(self) -> "WarpBytes":
        import warp as wp  # noqa: PLC0415
        import warp._src.context as wp_context  # noqa: PLC0415  (no public API for the totals yet)

        wp.init()
        self.core = getattr(wp_context.runtime, "core", None)
        self.ok = self.core is not None and hasattr(self.core, "wp_alloc_tracker_get_peak_bytes")
        self._enabled_here = self.ok and not self.core.wp_alloc_tracker_is_enabled()
        if self._enabled_here:
            self.core.wp_alloc_tracker_enable(1)
        return self

    def __exit__(self, *exc) -> None:
        if self._enabled_here:
            self.core.wp_alloc_tracker_enable(0)

    def reset(self) -> None:
        if self.ok:
            self.core.wp_alloc_tracker_reset()

    def current(self) -> int | None:
        return int(self.core.wp_alloc_tracker_get_current_bytes()) if self.ok else None

    def peak(self) -> int | None:
        return int(self.core.wp_alloc_tracker_get_peak_bytes()) if self.ok else None


def warp_array_bytes(obj, seen: set | None = None) -> int:
    """Bytes of every distinct wp.array reachable through dataclass fields, lists, tuples and
    dicts (capacity = the allocation; views and broadcast fields counted once by pointer)."""
    import warp as wp  # noqa: PLC0415

    seen = set() if seen is None else seen
    if isinstance(obj, wp.array):
        if obj.ptr is None or obj.ptr in seen:
            return 0
        seen.add(obj.ptr)
        return int(obj.capacity)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(warp_array_bytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    if isinstance(obj, (list, tuple)):
        return sum(warp_array_bytes(v, seen) for v in obj)
    if isinstance(obj, dict):
        return sum(warp_array_bytes(v, seen) for v in obj.values())
    return 0


def fit_linear(samples: dict[int, float]) -> tuple[float, float]:
    """(fixed, per unit) through the smallest and largest count."""
    (x0, y0), (x1, y1) = min(samples.items()), max(samples.items())
    slope = (y1 - y0) / (x1 - x0)
    return max(y0 - slope * x0, 0.0), slope


def fit_quadratic(samples: dict[int, int]) -> tuple[float, float, float]:
    """(a, b, c) with y = a + b x + c x^2 exactly through three integer samples."""
    (x0, y0), (x1, y1), (x2, y2) = sorted((x, Fraction(y)) for x, y in samples.items())[:3]
    s01, s12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    c = (s12 - s01) / (x2 - x0)
    b = s01 - c * (x0 + x1)
    return float(y0 - b * x0 - c * x0 * x0), float(b), float(c)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# ---- measurement ---------------------------------------------------------------------------------
def _train_config(preset: str, width: int, height: int, device: str, num_envs: int | None = None) -> TrainConfig:
    """The preset at this resolution and device, depth camera only; num_envs None keeps the preset's."""
    cfg = load_preset(preset)
    if cfg.policy_input != "depth":
        raise ValueError(f"bench capacity models depth policies; preset {preset!r} has policy_input "
                         f"{cfg.policy_input!r}. Use teacher-depth or quickstart.")
    camera = dataclasses.replace(cfg.env.camera, width=width, height=height)
    env = dataclasses.replace(cfg.env, num_envs=num_envs or cfg.env.num_envs, device=device, depth=True,
                              stereo_rgb=False, camera=camera)
    return dataclasses.replace(cfg, env=env)


def _spec(cfg: TrainConfig) -> ObsSpec:
    a = 23 if cfg.env.action_space == "joint_delta" else 6 + NUM_SYNERGIES
    return learner_spec(cfg.env.camera.width, cfg.env.camera.height, action_dim=a, proprio_dim=46 + a, critic_dim=112 + a)


def measure_sim(cfg: TrainConfig, counts: tuple[int, int, int]) -> dict:
    """Physics, render and env-tensor bytes at three world counts, fitted."""
    from dexrl.envs.grasp import GraspEnv  # noqa: PLC0415  (imports Warp)
    from dexrl.sim.scene import build_scene  # noqa: PLC0415

    e = cfg.env
    scene = build_scene(e)
    samples: dict[str, dict[int, int]] = {"physics": {}, "render": {}, "env": {}, "physics_arrays": {}, "render_arrays": {}}
    for n in counts:
        with WarpBytes() as warp:
            _sample_warp(scene, e, n, warp, samples)
        _free(torch.device(e.device))
        samples["env"][n] = _env_peak(GraspEnv, dataclasses.replace(e, num_envs=n))
        _free(torch.device(e.device))
    a, b, c = fit_quadratic(samples["physics"])
    render, env = fit_linear(samples["render"]), fit_linear(samples["env"])
    return {"physics": (a, b, c), "render": render, "env": env, "samples": samples}


def _sample_warp(scene, e, n: int, warp: WarpBytes, samples: dict) -> None:
    """Physics (construction + two steps) and render (construction + one render) bytes at n worlds."""
    from dexrl.sim.cameras import CameraRig  # noqa: PLC0415
    from dexrl.sim.physics import BatchedPhysics  # noqa: PLC0415

    warp.reset()
    physics = BatchedPhysics(scene, n, e.device, e.nconmax_per_world, e.njmax_per_world)
    samples["physics_arrays"][n] = warp_array_bytes([physics.model, physics.data])
    for _ in range(2):
        physics.step(e.decimation)
    samples["physics"][n] = warp.peak() if warp.ok else samples["physics_arrays"][n]
    warp.reset()
    rig = CameraRig(physics, e.camera, depth=True)
    rig.render()
    samples["render_arrays"][n] = warp_array_bytes(rig.rc)
    samples["render"][n] = warp.peak() if warp.ok else samples["render_arrays"][n]


def _env_peak(env_cls, env_cfg) -> int:
    def run():
        env = env_cls(env_cfg)
        env.reset()
        action = torch.zeros(env.n, env.action_dim, device=env.device)  # (N, A)
        for _ in range(2):
            env.step(action)

    return torch_peak_bytes(run, torch.device(env_cfg.device))[0]


def _random_storage(storage: RolloutStorage, gen: torch.Generator) -> None:
    """Plausible rollout contents: depth in [0.5, 1.3] m, normal floats, sparse episode ends."""
    for name, buf in storage.tensors().items():
        if buf.dtype == torch.bool:
            buf.copy_(torch.rand(buf.shape, generator=gen, device=buf.device) < 0.02)
        elif name == f"obs/{storage.spec.image_key}":
            buf.copy_(torch.empty(buf.shape, device=buf.device).uniform_(0.5, 1.3, generator=gen))
        else:
            buf.normal_(generator=gen)
    storage.action_std.uniform_(0.5, 1.5, generator=gen)


def _random_obs(spec: ObsSpec, n: int, device: torch.device) -> dict[str, torch.Tensor]:
    """What the learner receives for n envs: depth float16 decoded to float32, vectors float32."""
    obs = {spec.image_key: torch.full((n, *spec.image_shape), 0.9, dtype=torch.float16, device=device).float()}  # (N, 1, H, W)
    return obs | {k: torch.zeros(n, d, device=device) for k, d in spec.vector_dims.items()}  # (N, D)


def _saved_bytes(model, storage: RolloutStorage, ppo_cfg) -> int:
    """Bytes of the distinct storages autograd saves during evaluate + loss on one minibatch."""
    params = {q.untyped_storage().data_ptr() for q in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    mb = next(iter(storage.minibatches(1)))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(storage.device, ppo_cfg.bf16):
        ev = model.evaluate(mb.obs, mb.actions, mb.states, mb.resets)
        loss = -ev.log_prob.mean() + ev.value.square().mean() - ev.entropy.mean()
    del loss, ev
    return sum(saved.values())


class _PhasePeaks:
    """Peak torch bytes of an update's two phases, split at the optimizer step: minibatch
    gather + forward + loss + backward (grows with the minibatch), then the optimizer step
    (grads and Adam's temporaries: fixed)."""

    def __init__(self, ppo: PPO, device: torch.device) -> None:
        self.device, self.live, self.phases = device, None, []
        self.base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        self.handle = ppo.optimizer.register_step_pre_hook(lambda *_: self._split())

    def _peak_and_reset(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self.base
            torch.cuda.reset_peak_memory_stats(self.device)
            return peak
        peak, self.live.peak = self.live.peak, self.live.current
        return peak

    def _split(self) -> None:
        self.phases.append(self._peak_and_reset())

    def run(self, fn: Callable[[], object]) -> tuple[int, int]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            fn()
        else:
            with TorchLiveBytes() as self.live:
                fn()
        last = self._peak_and_reset()
        self.handle.remove()
        return self.phases[0], last


def measure_learner(cfg: TrainConfig, device: torch.device, probe: tuple[int, int]) -> dict:
    """Update peak per minibatch env (two-point fit of the gather + forward + backward phase),
    the optimizer step's peak, saved tensors, inference per env, params."""
    spec, gen = _spec(cfg), torch.Generator(device=device).manual_seed(0)
    ppo_cfg = dataclasses.replace(cfg.ppo, num_epochs=1, num_minibatches=1)  # one minibatch = all envs
    torch.manual_seed(0)
    model = build_actor_critic(spec, cfg.model, ppo_cfg, device)
    ppo = PPO(model, ppo_cfg, device)
    update, optimizer, saved, infer = {}, {}, {}, {}
    for i, n in enumerate((probe[0], *probe)):  # the first pass creates Adam's state
        storage = RolloutStorage(spec, cfg.model, ppo_cfg, n, device)
        _random_storage(storage, gen)
        phases = _PhasePeaks(ppo, device).run(lambda: ppo.update(storage))
        if i > 0:
            update[n], optimizer[n] = phases
            saved[n] = _saved_bytes(model, storage, ppo_cfg)
            state, reset = model.initial_state(n, device), torch.zeros(n, dtype=torch.bool, device=device)
            infer[n] = torch_peak_bytes(lambda: model.act(_random_obs(spec, n, device), state, reset), device)[0]
        del storage
        _free(device)
    params = sum(q.numel() * q.element_size() for q in model.parameters())
    # The update phase's peak is the saved activations (exactly linear in the minibatch) plus
    # backward temporaries whose size does not grow with it; its own two-point slope jumps with
    # where the peak falls, so the saved-tensor slope is the per-env cost and the largest excess
    # over it is fixed. Resident: params + Adam m, v (3P); fixed transient: the larger of that
    # excess and the optimizer step's peak (both hold the grads).
    per_env = fit_linear(saved)[1]
    excess = max(peak - per_env * n for n, peak in update.items())
    return {
        "params": params, "learner_fixed": 3 * params + max(max(optimizer.values()), excess, params),
        "update_per_env": per_env, "update_peak_slope": fit_linear(update)[1], "inference_per_env": fit_linear(infer)[1],
        "samples": {"update": update, "optimizer_step": optimizer, "saved": saved, "inference": infer},
    }


def _cuda_sim_overhead(cfg: TrainConfig, n: int) -> float | None:
    """On CUDA: device memory a tiny env takes beyond what the trackers see (Warp modules, CUDA
    graphs, pool slack). Meaningful only as the first simulation of the process."""
    device = torch.device(cfg.env.device)
    if device.type != "cuda":
        return None
    from dexrl.envs.grasp import GraspEnv  # noqa: PLC0415

    with WarpBytes() as warp:
        torch.cuda.synchronize(device)
        free0, torch0 = torch.cuda.mem_get_info(device)[0], torch.cuda.memory_reserved(device)
        warp.reset()
        env = GraspEnv(dataclasses.replace(cfg.env, num_envs=n))
        env.reset()
        env.step(torch.zeros(n, env.action_dim, device=device))
        torch.cuda.synchronize(device)
        used = free0 - torch.cuda.mem_get_info(device)[0]
        seen = (warp.current() or 0) + torch.cuda.memory_reserved(device) - torch0
        del env
    _free(device)
    return float(max(used - seen, 0))


def measure_parts(resolution: str, preset: str = "teacher-depth", device: str = "cpu", num_envs_probe: int = 2) -> Parts:
    """Measure every part at `resolution` ('WxH') for `preset` on `device`. World counts
    (p, 3p, 5p) for the simulator fits and minibatches of (p, 2p) envs for the learner, p = num_envs_probe."""
    if num_envs_probe < 1:
        raise ValueError(f"num_envs_probe must be >= 1, got {num_envs_probe}")
    w, h = parse_resolution(resolution)
    p = num_envs_probe
    cfg = _train_config(preset, w, h, device)
    overhead = _cuda_sim_overhead(cfg, p)
    sim = measure_sim(cfg, (p, 3 * p, 5 * p))
    learner = measure_learner(cfg, torch.device(device), (p, 2 * p))
    spec = _spec(cfg)
    a_dim = spec.action_dim
    transit = transit_bytes_per_world(w, h, spec.policy_vector_dim, spec.value_vector_dim, 64 + a_dim, a_dim)
    a, b, c = sim["physics"]
    return Parts(
        resolution=f"{w}x{h}", device=device, preset=preset,
        num_steps=cfg.ppo.num_steps, num_minibatches=cfg.ppo.num_minibatches,
        physics_fixed=a, physics_per_world=b, physics_per_world_sq=c,
        render_fixed=sim["render"][0], render_per_world=sim["render"][1],
        env_fixed=sim["env"][0], env_per_world=sim["env"][1], transit_per_world=transit,
        storage_per_env=bytes_per_env(spec, cfg.model, cfg.ppo), policy_state_per_env=policy_state_bytes_per_env(cfg.model),
        update_per_minibatch_env=learner["update_per_env"], update_peak_slope=learner["update_peak_slope"],
        inference_per_env=learner["inference_per_env"], params_bytes=learner["params"],
        learner_fixed=learner["learner_fixed"], sim_overhead_measured=overhead,
        samples={**sim["samples"], **learner["samples"]},
    )


# ---- report ----------------------------------------------------------------------------------------
def _b(x: float | None) -> str:
    if x is None:
        return "n/a"
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(x) >= size:
            return f"{x / size:,.2f} {unit}"
    return f"{x:,.0f} B"


def format_table(p: Parts, b: Budget, result: dict) -> str:
    mb = f"fixed {b.minibatch_envs} envs" if b.minibatch_envs else f"N/{p.num_minibatches} envs"
    rows = [
        ("physics (model + data + step scratch)", p.physics_fixed, p.physics_per_world),
        ("render context (depth)", p.render_fixed, p.render_per_world),
        ("env tensors (torch, step peak)", p.env_fixed, p.env_per_world),
        ("images in transit (per step)", None, p.transit_per_world),
        ("rollout storage", None, p.storage_per_env),
        ("policy state (recurrent carry)", None, p.policy_state_per_env),
        (f"update per minibatch env ({mb})", None, p.update_per_minibatch_env),
        ("  (raw peak slope, reference)", None, p.update_peak_slope),
        ("inference (act on N envs)", None, p.inference_per_env),
        ("learner fixed (params, Adam, grads, step)", p.learner_fixed, None),
        ("sim overhead (parameter)", b.sim_overhead_bytes, None),
        ("CUDA context (parameter, every GPU)", b.context_bytes, None),
    ]
    lines = [f"bench capacity {p.resolution}: parts measured on {p.device}, preset {p.preset}, "
             f"{b.gpus} GPUs x {_b(b.gpu_mem_bytes)}",
             f"  {'part':<44}{'fixed':>14}{'per world':>14}"]
    lines += [f"  {name:<44}{_b(f) if f is not None else '-':>14}{_b(v) if v is not None else '-':>14}" for name, f, v in rows]
    if p.physics_per_world_sq > 0:
        lines.append(f"  physics grows as N^2: +{_b(p.physics_per_world_sq)} x N^2 (contact buffers sized nconmax * N "
                     "per world; mujoco_warp's put_data takes nconmax per world)")
    if p.sim_overhead_measured is not None:
        lines.append(f"  sim overhead measured on this GPU: {_b(p.sim_overhead_measured)}")
    r = result
    lines += [
        f"  {'Table I':<22}{'per GPU':>12}{'total':>12}",
        f"  {'data parallel':<22}{r['dp_per_gpu']:>12,}{r['dp_total']:>12,}",
        f"  {'disaggregated':<22}{r['disagg_per_gpu']:>12,}{r['disagg_total']:>12,}   "
        f"({b.gpus - 1} sim GPUs; {r['disagg_bound']}-bound: sim max {r['sim_max_per_gpu']:,}/GPU, "
        f"learner max {r['learner_max_total']:,})",
        f"  {'ratio':<22}{'n/a (no DP rank fits)' if r['ratio'] is None else format(r['ratio'], '.2f'):>24}",
    ]
    return "\n".join(lines)


def parts_json(p: Parts) -> dict:
    d = dataclasses.asdict(p)
    d["samples"] = {k: {str(n): v for n, v in s.items()} for k, s in p.samples.items()}
    return d


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


# ---- validation on a real device --------------------------------------------------------------------
def _is_oom(err: BaseException) -> bool:
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and any(s in msg for s in ("out of memory", "failed to allocate", "memoryallocation"))


def _ballast(device: torch.device, budget_gib: float | None) -> torch.Tensor | None:
    """Takes total - budget bytes so the rest of the process sees a `budget_gib` card."""
    if device.type != "cuda" or budget_gib is None:
        return None
    total = torch.cuda.mem_get_info(device)[1]
    extra = int(total - budget_gib * GIB)
    return torch.empty(extra, dtype=torch.uint8, device=device) if extra > 0 else None


def _allocate_role(role: str, cfg: TrainConfig, n: int, device: torch.device, keep: list) -> None:
    spec = _spec(cfg)
    if role in ("sim", "dp"):
        from dexrl.envs.grasp import GraspEnv  # noqa: PLC0415

        env = GraspEnv(cfg.env)
        keep.append(env)
        env.reset()
        action = torch.zeros(n, env.action_dim, device=device)  # (N, A)
        for _ in range(2):
            env.step(action)
    if role in ("sim", "learner"):  # send buffers on a sim rank, receive buffers on the learner
        w, h = cfg.env.camera.width, cfg.env.camera.height
        keep.append(torch.empty(n, transit_bytes_per_world(w, h), dtype=torch.uint8, device=device))
    if role in ("learner", "dp"):
        model = build_actor_critic(spec, cfg.model, cfg.ppo, device)
        ppo = PPO(model, cfg.ppo, device)
        storage = RolloutStorage(spec, cfg.model, cfg.ppo, n, device)
        keep += [model, ppo, storage]
        _random_storage(storage, torch.Generator(device=device).manual_seed(0))
        model.act(_random_obs(spec, n, device), model.initial_state(n, device), torch.ones(n, dtype=torch.bool, device=device))
        ppo.update(storage)


def validate_role(role: str, num_envs: int, resolution: str, device: str = "cuda", preset: str = "teacher-depth",
                  budget_gib: float | None = None) -> dict:
    """Allocate one role at num_envs worlds and run it once (sim: GraspEnv reset + 2 steps + send
    buffers; learner: model, Adam, storage, receive buffers, one act on N envs, one PPO update on
    synthetic data; dp: both). Returns {"fits": bool, "error": first line of the OOM or None, ...}.
    Errors other than running out of memory propagate."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    w, h = parse_resolution(resolution)
    cfg = _train_config(preset, w, h, device, num_envs)  # checks num_envs against num_minibatches
    dev = torch.device(device)
    keep: list = []
    ballast = _ballast(dev, budget_gib)
    start, fits, error = time.perf_counter(), True, None
    try:
        _allocate_role(role, cfg, num_envs, dev, keep)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    except Exception as err:  # noqa: BLE001 - only running out of memory is an answer
        if not _is_oom(err):
            raise
        fits, error = False, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    result = {"role": role, "num_envs": num_envs, "resolution": f"{w}x{h}", "device": device, "preset": preset,
              "budget_gib": budget_gib, "fits": fits, "error": error, "seconds": time.perf_counter() - start}
    if dev.type == "cuda":
        result["torch_peak_bytes"] = torch.cuda.max_memory_allocated(dev) - (ballast.numel() if ballast is not None else 0)
        result["device_used_bytes"] = int(torch.cuda.mem_get_info(dev)[1] - torch.cuda.mem_get_info(dev)[0])
    del keep, ballast
    _free(dev)
    return result


def _validate_isolated(kwargs: dict) -> dict:
    code = ("import json, sys; from dexrl.bench.capacity import validate_role; "
            "print(json.dumps(validate_role(**json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True)
    if proc.returncode != 0:  # a native abort; out of memory if it says so, else unknown
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        fits = False if _is_oom(RuntimeError(proc.stderr)) else None
        return {**kwargs, "fits": fits, "error": f"process exited {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def validate_plan(result: dict, resolution: str, device: str = "cuda", preset: str = "teacher-depth",
                  budget_gib: float | None = None, over: float = 0.10) -> list[dict]:
    """Each role at its predicted maximum and `over` above (rounded up to whole minibatches),
    each in a fresh process; "fits" is None where the process died for another reason."""
    num_minibatches = load_preset(preset).ppo.num_minibatches
    predicted = {"sim": result["sim_max_per_gpu"], "learner": result["learner_max_total"], "dp": result["dp_per_gpu"]}
    checks = []
    for role, n in predicted.items():
        above = int(math.ceil(n * (1 + over) / num_minibatches)) * num_minibatches
        for count, label in ((n, "predicted"), (above, f"+{over:.0%}")):
            if count <= 0:
                continue
            kwargs = {"role": role, "num_envs": count, "resolution": resolution, "device": device,
                      "preset": preset, "budget_gib": budget_gib}
            checks.append({"at": label, **_validate_isolated(kwargs)})
    return checks
