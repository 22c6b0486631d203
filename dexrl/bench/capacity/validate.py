"""Validating a plan on a real device: each role allocated and run at its predicted maximum."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from dexrl.bench.capacity.measure import _free, _random_obs, _random_storage, _train_config
from dexrl.bench.capacity.plan import GIB, transit_bytes_per_world
from dexrl.bench.learner import preset_spec
from dexrl.config.env import parse_resolution
from dexrl.config.train import TrainConfig, preset as load_preset
from dexrl.rl import PPO, RolloutStorage, build_actor_critic

ROLES = ("sim", "learner", "dp")


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
    spec = preset_spec(cfg)
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
        if cfg.overlap_update:  # the rollout being collected during the update, and the acting copy
            keep += [RolloutStorage(spec, cfg.model, cfg.ppo, n, device), copy.deepcopy(model)]
        _random_storage(storage, torch.Generator(device=device).manual_seed(0))
        model.act(_random_obs(spec, n, device), model.initial_state(n, device), torch.ones(n, dtype=torch.bool, device=device))
        ppo.update(storage)


def validate_role(role: str, num_envs: int, resolution: str, device: str = "cuda", preset: str = "teacher-depth",
                  budget_gib: float | None = None, image_storage: str | None = None,
                  overlap_update: bool | None = None) -> dict:
    """Allocate one role at num_envs worlds and run it once (sim: GraspEnv reset + 2 steps + send
    buffers; learner: model, Adam, storage, receive buffers, one act on N envs, one PPO update of
    one epoch on synthetic data; dp: both), with the preset's learner settings (image_storage and
    overlap_update overridable).
    Returns {"fits": bool, "error": first line of the OOM or None, ...}. Errors other than
    running out of memory propagate."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    w, h = parse_resolution(resolution)
    cfg = _train_config(preset, w, h, device, num_envs)  # checks num_envs against num_minibatches
    if image_storage is not None:
        cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, image_storage=image_storage))
    if overlap_update is not None:
        cfg = dataclasses.replace(cfg, overlap_update=overlap_update)
    # One epoch: the update's peak is reached in its first step, and further epochs only repeat
    # it (at a planned maximum of ~50k worlds, 4 epochs could outlast the check's time limit).
    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, num_epochs=1))
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
              "budget_gib": budget_gib, "image_storage": cfg.ppo.image_storage, "overlap_update": cfg.overlap_update,
              "fits": fits, "error": error,
              "seconds": time.perf_counter() - start}
    if dev.type == "cuda":
        result["torch_peak_bytes"] = torch.cuda.max_memory_allocated(dev) - (ballast.numel() if ballast is not None else 0)
        result["device_used_bytes"] = int(torch.cuda.mem_get_info(dev)[1] - torch.cuda.mem_get_info(dev)[0])
    del keep, ballast
    _free(dev)
    return result


def _validate_isolated(kwargs: dict, timeout_s: float) -> dict:
    code = ("import json, sys; from dexrl.bench.capacity import validate_role; "
            "print(json.dumps(validate_role(**json.loads(sys.argv[1]))))")
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**kwargs, "fits": None, "error": f"no result within {timeout_s:g} s"}
    if proc.returncode != 0:  # a native abort; out of memory if it says so, else unknown
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        fits = False if _is_oom(RuntimeError(proc.stderr)) else None
        return {**kwargs, "fits": fits, "error": f"process exited {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def validate_plan(result: dict, resolution: str, device: str = "cuda", preset: str = "teacher-depth",
                  budget_gib: float | None = None, over: float = 0.10, roles: tuple[str, ...] = ROLES,
                  timeout_s: float = 240.0) -> Iterator[dict]:
    """Each role of ``roles`` at its predicted maximum and ``over`` above (rounded up to whole
    minibatches), each in a fresh process given ``timeout_s``, with the plan's image storage
    and overlap_update; "fits" is None where the process died for another reason or did not
    finish. Yields each check as it ends, so that a caller cut short keeps the ones before."""
    num_minibatches = load_preset(preset).ppo.num_minibatches
    predicted = {"sim": result["sim_max_per_gpu"], "learner": result["learner_max_total"], "dp": result["dp_per_gpu"]}
    for role in roles:
        n = predicted[role]
        above = int(math.ceil(n * (1 + over) / num_minibatches)) * num_minibatches
        for count, label in ((n, "predicted"), (above, f"+{over:.0%}")):
            if count <= 0:
                continue
            kwargs = {"role": role, "num_envs": count, "resolution": resolution, "device": device,
                      "preset": preset, "budget_gib": budget_gib, "image_storage": result.get("image_storage"),
                      "overlap_update": result.get("overlap_update")}
            yield {"at": label, **_validate_isolated(kwargs, timeout_s)}
