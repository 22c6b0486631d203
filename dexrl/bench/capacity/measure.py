"""Measured parts: torch and Warp allocation trackers, fits, simulator and learner probes."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from fractions import Fraction
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dexrl.bench.capacity.plan import Parts, policy_state_bytes_per_env, transit_bytes_per_world
from dexrl.bench.learner import preset_spec
from dexrl.config.env import parse_resolution
from dexrl.config.train import TrainConfig, preset as load_preset
from dexrl.models.spec import ObsSpec
from dexrl.rl import PPO, RolloutStorage, build_actor_critic, bytes_per_env


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


def fit_growth(samples: dict[int, int]) -> tuple[float, float, float]:
    """(a, b, c) of fit_quadratic where the curvature is positive; else the line through the
    ends, c = 0. No part shrinks per world as the worlds grow: a negative curvature is a few
    bytes of allocation noise, and extrapolated to 10^5 worlds it would predict memory that
    falls (a 1-byte change in the middle sample made every GPU hold 2^30 worlds)."""
    a, b, c = fit_quadratic(samples)
    if c > 0:
        return a, b, c
    fixed, slope = fit_linear(samples)
    return fixed, slope, 0.0


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
    a, b, c = fit_growth(samples["physics"])
    render, env = fit_linear(samples["render"]), fit_linear(samples["env"])
    return {"physics": (a, b, c), "render": render, "env": env, "samples": samples}


def _sample_warp(scene, e, n: int, warp: WarpBytes, samples: dict) -> None:
    """Physics (construction + two steps) and render (construction + one render) bytes at n worlds."""
    from dexrl.sim.cameras import CameraRig  # noqa: PLC0415
    from dexrl.sim.physics import BatchedPhysics  # noqa: PLC0415

    warp.reset()
    physics = BatchedPhysics(scene, n, e.device, e.nconmax_per_world, e.njmax_per_world, e.naccdmax_per_world)
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
            # In pieces: a float32 copy of the whole buffer would double what validation measures.
            for t in range(buf.shape[0]):
                for part in buf[t].split(4096):
                    part.copy_(torch.empty(part.shape, device=gen.device).uniform_(0.5, 1.3, generator=gen))
        else:
            buf.normal_(generator=gen)
    storage.action_std.uniform_(0.5, 1.5, generator=gen)


def _random_obs(spec: ObsSpec, n: int, device: torch.device) -> dict[str, torch.Tensor]:
    """What the learner acts on for n envs: depth compact (float16; the encoder decodes it a
    chunk at a time), vectors float32."""
    obs = {spec.image_key: torch.full((n, *spec.image_shape), 0.9, dtype=torch.float16, device=device)}  # (N, 1, H, W)
    return obs | {k: torch.zeros(n, d, device=device) for k, d in spec.vector_dims.items()}  # (N, D)


def _saved_bytes(model, storage: RolloutStorage) -> int:
    """Bytes of the distinct storages autograd saves during evaluate + loss on one minibatch."""
    params = {q.untyped_storage().data_ptr() for q in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    mb = next(iter(storage.minibatches(1)))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
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
    spec, gen = preset_spec(cfg), torch.Generator(device=device).manual_seed(0)
    # One minibatch = all envs, one backward pass, everything on the device: the raw costs.
    ppo_cfg = dataclasses.replace(cfg.ppo, num_epochs=1, num_minibatches=1, microbatch_envs=0, image_storage="device")
    torch.manual_seed(0)
    model = build_actor_critic(spec, cfg.model, ppo_cfg, device)
    ppo = PPO(model, ppo_cfg, device)
    update, optimizer, saved, infer, infer_rest = {}, {}, {}, {}, {}
    for i, n in enumerate((probe[0], *probe)):  # the first pass creates Adam's state
        storage = RolloutStorage(spec, cfg.model, ppo_cfg, n, device)
        _random_storage(storage, gen)
        phases = _PhasePeaks(ppo, device).run(lambda: ppo.update(storage))
        if i > 0:
            update[n], optimizer[n] = phases
            saved[n] = _saved_bytes(model, storage)
            state, reset = model.initial_state(n, device), torch.zeros(n, dtype=torch.bool, device=device)
            # The observations exist before act (the learner's receive buffers, a DP rank's
            # collector): counted there (transit_per_world), not as inference.
            obs = _random_obs(spec, n, device)
            act = lambda: model.act(obs, state, reset)  # noqa: E731
            model.encoder.chunk = 0
            infer[n] = torch_peak_bytes(act, device)[0]
            model.encoder.chunk = 1  # one image at a time: what remains grows with every env
            infer_rest[n] = torch_peak_bytes(act, device)[0]
        storage = None  # freed before the next size (not del: the update's lambda names it)
        _free(device)
    params = sum(q.numel() * q.element_size() for q in model.parameters())
    # The update phase's peak is the saved activations (exactly linear in the minibatch) plus
    # backward temporaries whose size does not grow with it; its own two-point slope jumps with
    # where the peak falls, so the saved-tensor slope is the per-env cost and the largest excess
    # over it is fixed. Resident: params + Adam m, v (3P); fixed transient: the larger of that
    # excess and the optimizer step's peak (both hold the grads).
    per_env = fit_linear(saved)[1]
    excess = max(peak - per_env * n for n, peak in update.items())
    rest = fit_linear(infer_rest)[1]
    return {
        "params": params, "learner_fixed": 3 * params + max(max(optimizer.values()), excess, params),
        "update_per_env": per_env, "update_peak_slope": fit_linear(update)[1],
        "inference_per_env": rest, "inference_encoder_per_env": max(fit_linear(infer)[1] - rest, 0.0),
        "samples": {"update": update, "optimizer_step": optimizer, "saved": saved, "inference": infer,
                    "inference_encoder_chunk_1": infer_rest},
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
    spec = preset_spec(cfg)
    a_dim = spec.action_dim
    transit = transit_bytes_per_world(w, h, spec.policy_vector_dim, spec.value_vector_dim, a_dim)
    a, b, c = sim["physics"]
    return Parts(
        resolution=f"{w}x{h}", device=device, preset=preset,
        num_steps=cfg.ppo.num_steps, num_minibatches=cfg.ppo.num_minibatches,
        physics_fixed=a, physics_per_world=b, physics_per_world_sq=c,
        render_fixed=sim["render"][0], render_per_world=sim["render"][1],
        env_fixed=sim["env"][0], env_per_world=sim["env"][1], transit_per_world=transit,
        storage_per_env=bytes_per_env(spec, cfg.model, cfg.ppo),
        storage_image_per_env=bytes_per_env(spec, cfg.model, dataclasses.replace(cfg.ppo, image_storage="host"), "host"),
        policy_state_per_env=policy_state_bytes_per_env(cfg.model),
        update_per_minibatch_env=learner["update_per_env"], update_peak_slope=learner["update_peak_slope"],
        inference_per_env=learner["inference_per_env"], inference_encoder_per_env=learner["inference_encoder_per_env"],
        params_bytes=learner["params"],
        learner_fixed=learner["learner_fixed"], sim_overhead_measured=overhead,
        samples={**sim["samples"], **learner["samples"]},
    )
