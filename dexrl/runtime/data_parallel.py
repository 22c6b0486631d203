"""Data-parallel baseline: every rank simulates its slice of the worlds, keeps its own
storage and runs PPO; gradients are averaged with one flattened all-reduce per step,
normalizer statistics are merged across ranks, and the KL that drives the learning rate is
averaged so every rank takes the same decisions. After the first rollout a rank that stays
silent past the fault timeout stops the run, named (comm.tighten)."""

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
    """Every rank's iteration statistics merged (merge_rank_stats); one small gather an iteration."""
    return merge_rank_stats(comm.all_gather_object({k: float(v) for k, v in stats.items()
                                                    if isinstance(v, (int, float))}))


def merge_rank_stats(every: list[dict]) -> dict:
    """The ranks' statistics as one process over all their worlds would report them: episode/*
    (means over the episodes that ended) weighted by each rank's ended episodes, a rank without
    any having none; per-step means (reward terms, success_rate) averaged over the ranks, which
    step equally many worlds; episode counts summed."""
    out = {}
    for key in sorted(set().union(*every)):
        rows = [r for r in every if key in r]
        if key.startswith("episode/"):
            out[key] = sum(r[key] * r["episodes"] for r in rows) / sum(r["episodes"] for r in rows)
        else:
            out[key] = sum(r[key] for r in rows) / len(rows)
    out["episodes"] = int(sum(r.get("episodes", 0) for r in every))
    return out


def build_rank(cfg: TrainConfig, info: comm.DistInfo, device: str) -> Trainer:
    n = cfg.env.num_envs // cfg.ranks
    env = GraspEnv(replace(adr_env_config(cfg), num_envs=n, world_offset=info.rank * n, device=device))
    hooks = DistributedHooks(grads=comm.all_reduce_mean_grads, mean=comm.all_reduce_mean, moments=_moments)

    def reduce_stats(stats: dict) -> dict:
        out = _mean_stats(stats)
        # The first rollout's statistics: every rank is past start-up (kernel builds), so a
        # rank silent for the fault timeout from here on is hung.
        comm.tighten(cfg.fault_timeout_s)
        return out

    return Trainer.build(cfg, env=env, hooks=hooks, rank=info.rank, is_logger=info.rank == 0,
                         stats_reduce=reduce_stats, after_init=lambda m: comm.broadcast_module(m, 0), agree=agree)


def agree(proposal: bool) -> bool:
    """ADR: an increment only when every rank proposes it (the global minimum decides)."""
    return bool(comm.all_reduce_min(torch.tensor([int(proposal)]))[0])
