"""Wire an ActorCritic with the normalizers the PPO config asks for."""

from __future__ import annotations

import torch

from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.models.actor_critic import ActorCritic
from dexrl.models.spec import ObsSpec
from dexrl.rl.normalizer import ObsNormalizer, RunningNormalizer


def build_actor_critic(spec: ObsSpec, model_cfg: ModelConfig, ppo_cfg: PPOConfig, device: torch.device | str) -> ActorCritic:
    """Model on `device`; vector observations clipped to +-5 std after normalization (lineage);
    the image encoder in bf16 when `ppo_cfg.bf16` (on CUDA)."""
    obs_normalizer = ObsNormalizer(spec.vector_dims, clip=5.0) if ppo_cfg.normalize_obs else None
    value_normalizer = RunningNormalizer(()) if ppo_cfg.normalize_value else None
    return ActorCritic(spec, model_cfg, obs_normalizer, value_normalizer, ppo_cfg.bf16).to(device)
