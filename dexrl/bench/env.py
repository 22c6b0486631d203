"""`dexrl bench env`: environment throughput against the bare MuJoCo Warp engine floor."""

from __future__ import annotations

import time

import mujoco_warp as mjw
import torch
import warp as wp

from dexrl.config.env import EnvConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.sim.physics import BatchedPhysics


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, steps: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls, after one warm-up call."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def engine_floor(env: GraspEnv, steps: int) -> dict:
    """The same batched physics + render loop, straight on mujoco_warp (no env logic), on a
    second copy of the model so the env's state is untouched."""
    p = BatchedPhysics(env.scene, env.n, str(env.device), env.cfg.nconmax_per_world, env.cfg.njmax_per_world,
                       env.cfg.naccdmax_per_world)
    rc = env.rig.rc if env.rig is not None else None

    def physics_only():
        p.step(env.cfg.decimation)

    def physics_render():
        physics_only()
        if rc is not None:
            with wp.ScopedDevice(p.wp_device):
                mjw.refit_bvh(p.model, p.data, rc)
                mjw.render(p.model, p.data, rc)

    return {"physics_s": _time(physics_only, steps, env.device), "floor_s": _time(physics_render, steps, env.device)}


def bench_env(cfg: EnvConfig, steps: int) -> dict:
    env = GraspEnv(cfg)
    env.reset()
    action = torch.zeros(env.n, env.action_dim, device=env.device)
    env_s = _time(lambda: env.step(action), steps, env.device)
    render_s = _time(env.rig.render, steps, env.device) if env.rig is not None else float("nan")
    floor = engine_floor(env, steps)
    n = cfg.num_envs
    return {
        "num_envs": n, "resolution": f"{cfg.camera.width}x{cfg.camera.height}", "device": str(env.device),
        "steps": steps, "env_steps_per_s": n / env_s,
        "physics_steps_per_s": n * cfg.decimation / floor["physics_s"],
        "render_frames_per_s": n / render_s,
        "engine_floor_env_steps_per_s": n / floor["floor_s"],
        "overhead_ratio": env_s / floor["floor_s"],
    }
