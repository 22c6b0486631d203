"""Pure memory model and planner: bytes per role at N worlds, max worlds per GPU, Table I."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from dexrl.config.rl import IMAGE_STORAGE
from dexrl.models.actor_critic import recurrent_state_shapes
from dexrl.runtime.wire import step_bytes_per_world

GIB, MIB = 2**30, 2**20


def transit_bytes_per_world(width: int, height: int, proprio_dim: int = 69, critic_dim: int = 135,
                            action_dim: int = 23) -> int:
    """Bytes one world moves per step between a sim rank and the learner, as the runtime sends
    them (`dexrl.runtime.wire`): depth float16 (H*W*2), its float32 row of the reply block
    (proprio, critic, reward, flags, the final critic observation, episode statistics) and its
    float32 action."""
    return step_bytes_per_world(width * height * 2, {"proprio": proprio_dim, "critic": critic_dim}, action_dim)


def policy_state_bytes_per_env(model_cfg) -> int:
    """The learner's live recurrent carry per env: float32 (layers, hidden) per state tensor."""
    return sum(4 * layers * hidden for layers, hidden in recurrent_state_shapes(model_cfg).values())


@dataclass
class Parts:
    """Measured memory of each part, bytes (see the package docstring)."""

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
    storage_image_per_env: float = 0.0  # the images' share of storage_per_env (what 'host' storage moves)
    policy_state_per_env: float = 0.0
    update_per_minibatch_env: float = 0.0
    update_peak_slope: float = 0.0  # reference: the update phase's raw two-point peak slope
    inference_per_env: float = 0.0  # act() beyond the image encoder: grows with every env
    inference_encoder_per_env: float = 0.0  # the image encoder's share: bounded by encoder_chunk
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
    """The node and the learner's memory settings (PPOConfig.microbatch_envs / image_storage,
    ModelConfig.encoder_chunk, TrainConfig.overlap_update; 0 means off, as there)."""

    gpus: int
    gpu_mem_bytes: float
    sim_overhead_bytes: float = 1.0 * GIB
    context_bytes: float = 0.5 * GIB
    multiple: int = 64
    microbatch_envs: int = 0  # envs per backward pass; 0: the whole minibatch (N / num_minibatches)
    encoder_chunk: int = 0  # images per encoder pass in act(); 0: all N at once
    image_storage: str = "device"  # rollout images on the learner's 'device' or in 'host' memory
    host_mem_bytes: float = 512 * GIB  # the node's CPU memory for 'host' image storage
    overlap_update: bool = False  # a second rollout storage and a copy of the parameters per learner

    @property
    def rollouts(self) -> int:
        return 2 if self.overlap_update else 1

    def __post_init__(self) -> None:
        if self.gpus < 2:
            raise ValueError(f"the plan compares data parallel with disaggregated, which needs >= 2 GPUs, got {self.gpus}")
        if self.gpu_mem_bytes <= 0 or self.multiple < 1 or self.host_mem_bytes <= 0:
            raise ValueError("gpu and host memory must be > 0 and multiple >= 1")
        if self.microbatch_envs < 0 or self.encoder_chunk < 0:
            raise ValueError("microbatch_envs and encoder_chunk must be >= 0 (0: off)")
        if self.image_storage not in IMAGE_STORAGE:
            raise ValueError(f"image_storage must be one of {IMAGE_STORAGE}, got {self.image_storage!r}")


def learner_transient_bytes(p: Parts, b: Budget, n: int) -> float:
    """The backward pass of one micro-batch and inference on all n envs (the encoder in chunks):
    the larger of the two, or with overlap_update both, since the next rollout is collected on
    a second thread while the update runs."""
    minibatch = n / p.num_minibatches
    micro = min(minibatch, b.microbatch_envs) if b.microbatch_envs else minibatch
    encoded = min(n, b.encoder_chunk) if b.encoder_chunk else n
    update = p.update_per_minibatch_env * micro
    inference = p.inference_per_env * n + p.inference_encoder_per_env * encoded
    return update + inference if b.overlap_update else max(update, inference)


def storage_device_bytes(p: Parts, b: Budget) -> float:
    """Rollout bytes per env on the learner's GPU (every rollout storage it keeps)."""
    return b.rollouts * (p.storage_per_env - (p.storage_image_per_env if b.image_storage == "host" else 0.0))


def storage_host_bytes(p: Parts, b: Budget) -> float:
    """Rollout bytes per env in host memory (all learners of the node share it)."""
    return b.rollouts * (p.storage_image_per_env if b.image_storage == "host" else 0.0)


def learner_fixed_bytes(p: Parts, b: Budget) -> float:
    """Params, Adam, grads and the optimizer step; with overlap_update the collector's copy of the params."""
    return p.learner_fixed + (p.params_bytes if b.overlap_update else 0.0)


def sim_rank_bytes(p: Parts, b: Budget, n: int) -> float:
    return (b.context_bytes + b.sim_overhead_bytes + p.sim_fixed + n * (p.sim_per_world + p.transit_per_world)
            + p.physics_per_world_sq * n * n)


def learner_rank_bytes(p: Parts, b: Budget, n: int) -> float:
    # One receive buffer per world (RemoteEnvs: the Collector records step t's observations
    # before step t+1's arrive into the same buffer).
    per_env = storage_device_bytes(p, b) + p.policy_state_per_env + p.transit_per_world
    return b.context_bytes + learner_fixed_bytes(p, b) + n * per_env + learner_transient_bytes(p, b, n)


def dp_rank_bytes(p: Parts, b: Budget, n: int) -> float:
    # The collector holds each world's observations, compact as on the wire, through the
    # update (the disaggregated learner's receive buffers hold the same).
    return (b.context_bytes + b.sim_overhead_bytes + p.sim_fixed + learner_fixed_bytes(p, b)
            + n * (p.sim_per_world + storage_device_bytes(p, b) + p.policy_state_per_env + p.transit_per_world)
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


def ratio_bound(p: Parts, b: Budget) -> float | None:
    """The highest ratio any per-world memory could give, from the fixed costs alone: with L the
    learner's (its fixed bytes and one micro-batch's update), S a simulating GPU's and C the
    context, n l <= M - C - L and n s <= (G - 1)(M - C - S) give n (s + l) <= G (M - C) - L -
    (G - 1) S, while a DP world costs at most s + l: ratio <= that / (G (M - C - S - L)).
    Without fixed costs it is 1 (docs/results.md)."""
    learner = learner_fixed_bytes(p, b) + p.update_per_minibatch_env * b.microbatch_envs
    sim = b.sim_overhead_bytes + p.sim_fixed
    free = b.gpu_mem_bytes - b.context_bytes
    dp_free = b.gpus * (free - sim - learner)
    return (b.gpus * free - learner - (b.gpus - 1) * sim) / dp_free if dp_free > 0 else None


def plan(p: Parts, b: Budget) -> dict:
    """Table I for one resolution: max worlds per GPU and in total, both layouts. With 'host'
    image storage the node's host memory bounds the worlds of all its learners together."""
    m, sims = b.gpu_mem_bytes, b.gpus - 1
    host = storage_host_bytes(p, b)
    dp_gpu = max_worlds(lambda n: dp_rank_bytes(p, b, n), m, b.multiple)
    dp_host = max_worlds(lambda n: b.gpus * n * host, b.host_mem_bytes, b.multiple)
    dp = min(dp_gpu, dp_host)
    sim_max = max_worlds(lambda n: sim_rank_bytes(p, b, n), m, b.multiple)
    learner_max = min(max_worlds(lambda n: learner_rank_bytes(p, b, n), m, b.multiple * sims),
                      max_worlds(lambda n: n * host, b.host_mem_bytes, b.multiple * sims))
    per_sim = min(sim_max, learner_max // sims)
    total = per_sim * sims
    dp_total = dp * b.gpus
    return {
        "image_storage": b.image_storage, "overlap_update": b.overlap_update,
        "dp_per_gpu": dp, "dp_total": dp_total, "dp_bound": "host" if dp_host < dp_gpu else "gpu",
        "sim_max_per_gpu": sim_max, "learner_max_total": learner_max,
        "disagg_per_gpu": per_sim, "disagg_total": total, "ratio": total / dp_total if dp else None,
        "disagg_bound": "learner" if learner_max // sims < sim_max else "sim",
        # What no learner can lift: the sim GPUs full, as if one GPU held every rollout.
        "ratio_ceiling": sims * sim_max / dp_total if dp else None,
        # What no memory per world can lift: the fixed costs' bound.
        "ratio_bound": ratio_bound(p, b),
    }


def _b(x: float | None) -> str:
    if x is None:
        return "n/a"
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(x) >= size:
            return f"{x / size:,.2f} {unit}"
    return f"{x:,.0f} B"


def _table_one(result: dict, b: Budget) -> list[str]:
    r = result
    ratio = "n/a (no DP rank fits)" if r["ratio"] is None else format(r["ratio"], ".2f")
    ceiling, bound = ("n/a" if r[k] is None else format(r[k], ".2f") for k in ("ratio_ceiling", "ratio_bound"))
    return [
        f"    {'data parallel':<20}{r['dp_per_gpu']:>12,}{r['dp_total']:>12,}   ({r['dp_bound']}-bound)",
        f"    {'disaggregated':<20}{r['disagg_per_gpu']:>12,}{r['disagg_total']:>12,}   "
        f"({b.gpus - 1} sim GPUs; {r['disagg_bound']}-bound: sim max {r['sim_max_per_gpu']:,}/GPU, "
        f"learner max {r['learner_max_total']:,})",
        f"    {'ratio':<20}{ratio:>24}",
        f"    {'ceiling':<20}{ceiling:>24}   (the sim GPUs full, whatever the learner holds)",
        f"    {'bound':<20}{bound:>24}   (from the fixed costs, whatever each world costs)",
    ]


def format_table(p: Parts, b: Budget, results: dict[str, dict]) -> str:
    """The parts, then Table I for each image storage in `results` (image_storage -> plan)."""
    micro = f"micro-batches of {b.microbatch_envs}" if b.microbatch_envs else f"whole minibatch, N/{p.num_minibatches}"
    chunk = f"encoder in chunks of {b.encoder_chunk}" if b.encoder_chunk else "encoder on all N"
    rows = [
        ("physics (model + data + step scratch)", p.physics_fixed, p.physics_per_world),
        ("render context (depth)", p.render_fixed, p.render_per_world),
        ("env tensors (torch, step peak)", p.env_fixed, p.env_per_world),
        ("images in transit (per step)", None, p.transit_per_world),
        ("rollout storage", None, p.storage_per_env),
        ("  of which images (device or host)", None, p.storage_image_per_env),
        ("policy state (recurrent carry)", None, p.policy_state_per_env),
        (f"update per minibatch env ({micro})", None, p.update_per_minibatch_env),
        ("  (raw peak slope, reference)", None, p.update_peak_slope),
        (f"inference: encoder ({chunk})", None, p.inference_encoder_per_env),
        ("inference: the rest of act on N envs", None, p.inference_per_env),
        ("learner fixed (params, Adam, grads, step)", p.learner_fixed, None),
        ("sim overhead (parameter)", b.sim_overhead_bytes, None),
        ("CUDA context (parameter, every GPU)", b.context_bytes, None),
    ]
    lines = [f"bench capacity {p.resolution}: parts measured on {p.device}, preset {p.preset}, "
             f"{b.gpus} GPUs x {_b(b.gpu_mem_bytes)}, host {_b(b.host_mem_bytes)}"
             + (", overlap_update (two rollouts per learner)" if b.overlap_update else ""),
             f"  {'part':<48}{'fixed':>14}{'per world':>14}"]
    lines += [f"  {name:<48}{_b(f) if f is not None else '-':>14}{_b(v) if v is not None else '-':>14}" for name, f, v in rows]
    if p.physics_per_world_sq > 0:
        lines.append(f"  physics grows as N^2: +{_b(p.physics_per_world_sq)} x N^2 (contact buffers sized nconmax * N "
                     "per world; mujoco_warp's put_data takes nconmax per world)")
    if p.sim_overhead_measured is not None:
        lines.append(f"  sim overhead measured on this GPU: {_b(p.sim_overhead_measured)}")
    lines.append(f"  {'Table I':<22}{'per GPU':>12}{'total':>12}")
    for storage, result in results.items():
        where = "on the learner GPU" if storage == "device" else "in host memory"
        lines.append(f"  rollout images {where}:")
        lines += _table_one(result, b)
    if {"device", "host"} <= set(results) and results["device"]["dp_total"]:
        mixed = results["host"]["disagg_total"] / results["device"]["dp_total"]
        lines.append(f"  disaggregated with host images vs data parallel with device images (the paper's "
                     f"baseline layout): {mixed:.2f}")
    return "\n".join(lines)


def parts_json(p: Parts) -> dict:
    d = dataclasses.asdict(p)
    d["samples"] = {k: {str(n): v for n, v in s.items()} for k, s in p.samples.items()}
    return d
