"""Quick CUDA probes for a lent GPU (tools/device/checks.sh probes): facts the CPU tests
cannot check, each printed as one JSON line. Not a benchmark; seconds."""

import json
import warnings

import torch

from dexrl.models.depth_codec import select
from dexrl.sim.rng import Stream, WorldRNG


def _try(name, fn):
    try:
        print(json.dumps({"probe": name, **fn()}), flush=True)
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not stop the others
        print(json.dumps({"probe": name, "error": f"{type(exc).__name__}: {exc}"[:300]}), flush=True)


def uint16_ops():
    """uint16 images on CUDA: dexrl's select (int16 bits) and the plain ops it avoids."""
    x = torch.arange(0, 65535, 7, dtype=torch.int32).to(torch.uint16).cuda()
    ids = torch.randperm(x.numel(), device="cuda")[:1000]
    out = {"select_ok": torch.equal(select(x, 0, ids).cpu(), x.cpu()[ids.cpu()])}
    for op, fn in (("index_select", lambda: x.index_select(0, ids)), ("advanced_index", lambda: x[ids]),
                   ("cat", lambda: torch.cat([x, x])), ("float", lambda: x.float())):
        try:
            fn()
            out[op] = "ok"
        except Exception as exc:  # noqa: BLE001
            out[op] = f"{type(exc).__name__}: {str(exc)[:120]}"
    return out


def rng_cpu_equals_cuda():
    """The counter-based draws (int64 wrap-around) give the same numbers on both devices."""
    ids = torch.arange(4096)
    cpu = WorldRNG(7, ids).at(3).bits(Stream.RESET_SPAWN_XY, (2,))
    gpu = WorldRNG(7, ids.cuda()).at(3).bits(Stream.RESET_SPAWN_XY, (2,)).cpu()
    return {"equal": torch.equal(cpu, gpu)}


def host_syncs_per_step():
    """Host syncs in one env step on CUDA (each stalls the launch queue)."""
    from dexrl.config.env import CameraConfig, EnvConfig
    from dexrl.envs.grasp import GraspEnv

    out = {}
    for space in ("joint_delta", "palm_synergy"):
        env = GraspEnv(EnvConfig(num_envs=64, device="cuda", action_space=space, camera=CameraConfig(width=80, height=60)))
        env.reset()
        action = torch.zeros(env.n, env.action_dim, device="cuda")
        env.step(action)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            env.step(action)
            torch.cuda.set_sync_debug_mode("default")
        out[space] = len(caught)
        out[space + "_first"] = [str(w.message)[:100] for w in caught[:3]]
    return out


def pinned_rounding():
    """What the caching host allocator holds for a pinned buffer of 100 MiB + 1 byte."""
    before = torch.cuda.host_memory_stats().get("reserved_bytes.current", 0)
    buf = torch.empty(100 * 2**20 + 1, dtype=torch.uint8, pin_memory=True)
    after = torch.cuda.host_memory_stats().get("reserved_bytes.current", 0)
    return {"asked": buf.numel(), "reserved": after - before}


if __name__ == "__main__":
    for probe in (uint16_ops, rng_cpu_equals_cuda, pinned_rounding, host_syncs_per_step):
        _try(probe.__name__, probe)
