"""Data-parallel baseline: every rank simulates its slice of the worlds, keeps its own
storage and runs PPO; gradients are averaged with one flattened all-reduce per step,
normalizer statistics are merged across ranks, and the KL that drives the learning rate is
averaged so every rank takes the same decisions."""

from __future__ import annotations

from dataclasses import replace

import torch

from dexrl.config.train import TrainConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.rl import DistributedHooks, merge_moments_stacked
from dexrl.runtime import comm
from dexrl.runtime.single import Trainer, adr_env_config


def _moments(count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor):
    """Every rank's (count, mean, M2) merged into one, identically on all ranks."""
    return merge_moments_stacked(comm.all_gather_stack(count), comm.all_gather_stack(mean), comm.all_gather_stack(m2))


def _mean_stats(stats: dict) -> dict:
    """Per-rank iteration statistics averaged over the ranks that have them (episode counts
    summed). Ranks may differ in keys (episode statistics exist only where an episode ended),
    so they first agree on the union: a gather needs the same shape everywhere."""
    mine = [k for k, v in stats.items() if isinstance(v, (int, float))]
    keys = sorted(set().union(*comm.all_gather_object(mine)))
    present = torch.tensor([[float(k in stats) for k in keys], [float(stats.get(k, 0.0)) for k in keys]])
    gathered = comm.all_gather_stack(present)  # (W, 2, K)
    weight = gathered[:, 0].sum(0).clamp_min(1)
    out = {k: float(v) for k, v in zip(keys, gathered[:, 1].sum(0) / weight)}
    out["episodes"] = int(gathered[:, 1, keys.index("episodes")].sum()) if "episodes" in keys else 0
    return out


def build_rank(cfg: TrainConfig, info: comm.DistInfo, device: str) -> Trainer:
    n = cfg.env.num_envs // cfg.ranks
    env = GraspEnv(replace(adr_env_config(cfg), num_envs=n, world_offset=info.rank * n, device=device))
    hooks = DistributedHooks(grads=comm.all_reduce_mean_grads, mean=comm.all_reduce_mean, moments=_moments)
    return Trainer.build(cfg, env=env, hooks=hooks, rank=info.rank, is_logger=info.rank == 0,
                         stats_reduce=_mean_stats, after_init=lambda m: comm.broadcast_module(m, 0), agree=agree)


def agree(proposal: bool) -> bool:
    """ADR: an increment only when every rank proposes it (the global minimum decides)."""
    return bool(comm.all_reduce_min(torch.tensor([int(proposal)]))[0])
