"""Environment-independent RL core: GAE, normalizers, rollout storage, PPO."""

from dexrl.rl.build import build_actor_critic
from dexrl.rl.gae import compute_gae
from dexrl.rl.normalizer import (
    ObsNormalizer,
    RunningNormalizer,
    batch_moments,
    merge_moments,
    merge_moments_stacked,
)
from dexrl.rl.ppo import (
    PPO,
    DistributedHooks,
    adaptive_lr,
    bounds_loss,
    linear_lr,
    ppo_losses,
    surrogate_loss,
    value_loss,
)
from dexrl.rl.storage import (
    Minibatch,
    RolloutStorage,
    bytes_per_env,
    storage_layout,
)

__all__ = [
    "PPO",
    "DistributedHooks",
    "Minibatch",
    "ObsNormalizer",
    "RolloutStorage",
    "RunningNormalizer",
    "adaptive_lr",
    "batch_moments",
    "bounds_loss",
    "build_actor_critic",
    "bytes_per_env",
    "compute_gae",
    "linear_lr",
    "merge_moments",
    "merge_moments_stacked",
    "ppo_losses",
    "storage_layout",
    "surrogate_loss",
    "value_loss",
]
