"""Tiny batched torch tasks and a minimal collect/train loop for the RL tests.

Both envs auto-reset: `step` returns the first observation of the next episode for envs
whose episode just ended, together with that step's reward and flags.
"""

from __future__ import annotations

import torch

from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.models import ObsSpec
from dexrl.models.depth_codec import encode_depth
from dexrl.rl import PPO, RolloutStorage, build_actor_critic


class PointMass:
    """1-D point mass (double integrator) that must reach and hold a random target.

    x'' = 4 a - 2 x' (a clipped to [-1, 1]), dt = 0.1, 30 steps, then truncated (time-out).
    reward = -|x - target|. Policy sees (x - target, x'); the critic also sees the target
    and the time left (asymmetric critic)."""

    spec = ObsSpec(action_dim=1, policy_vectors={"proprio": 2}, value_vectors={"critic": 4})

    def __init__(self, num_envs: int, seed: int, episode_steps: int = 30) -> None:
        self.n, self.steps = num_envs, episode_steps
        self.gen = torch.Generator().manual_seed(seed)
        self.pos = torch.zeros(num_envs)
        self.vel = torch.zeros(num_envs)
        self.target = torch.zeros(num_envs)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self._reset(torch.ones(num_envs, dtype=torch.bool))

    def _reset(self, ids: torch.Tensor) -> None:
        k = int(ids.sum())
        self.pos[ids] = torch.rand(k, generator=self.gen) * 2 - 1
        self.target[ids] = torch.rand(k, generator=self.gen) * 2 - 1
        self.vel[ids] = 0.0
        self.t[ids] = 0

    def obs(self) -> dict[str, torch.Tensor]:
        err = self.pos - self.target
        left = 1.0 - self.t.float() / self.steps
        return {
            "proprio": torch.stack([err, self.vel], dim=-1),  # (N, 2)
            "critic": torch.stack([self.pos, self.vel, self.target, left], dim=-1),  # (N, 4)
        }

    def step(self, action: torch.Tensor):
        a = action[:, 0].clamp(-1.0, 1.0)
        self.vel = self.vel + 0.1 * (4.0 * a - 2.0 * self.vel)
        self.pos = self.pos + 0.1 * self.vel
        reward = -(self.pos - self.target).abs()  # (N,)
        self.t += 1
        truncated = self.t >= self.steps
        terminated = torch.zeros_like(truncated)
        self._reset(truncated)
        return self.obs(), reward, terminated, truncated


class CueMemory:
    """The cue (+-1) is visible only in an episode's first observation; at the last of
    `length` steps the reward is cue * clip(a, -1, 1). Without memory the expected reward of
    any policy is 0; with memory it is 1. Episodes start staggered so resets fall inside
    training sequences."""

    spec = ObsSpec(action_dim=1, policy_vectors={"proprio": 2}, value_vectors={"critic": 3})

    def __init__(self, num_envs: int, seed: int, length: int = 5, staggered: bool = True) -> None:
        self.n, self.length = num_envs, length
        self.gen = torch.Generator().manual_seed(seed)
        self.cue = torch.randint(0, 2, (num_envs,), generator=self.gen).float() * 2 - 1
        start = torch.randint(0, length, (num_envs,), generator=self.gen) if staggered else torch.zeros(num_envs, dtype=torch.long)
        self.t = start

    def obs(self) -> dict[str, torch.Tensor]:
        first = (self.t == 0).float()
        last = (self.t == self.length - 1).float()
        return {
            "proprio": torch.stack([self.cue * first, last], dim=-1),  # (N, 2) cue only at t = 0
            "critic": torch.stack([self.cue, last, self.t.float() / self.length], dim=-1),  # (N, 3)
        }

    def step(self, action: torch.Tensor):
        last = self.t == self.length - 1
        reward = torch.where(last, self.cue * action[:, 0].clamp(-1.0, 1.0), torch.zeros(self.n))
        self.t = torch.where(last, torch.zeros_like(self.t), self.t + 1)
        new_cue = torch.randint(0, 2, (self.n,), generator=self.gen).float() * 2 - 1
        self.cue = torch.where(last, new_cue, self.cue)
        return self.obs(), reward, last, torch.zeros_like(last)


def collect(env, model, storage: RolloutStorage, carry: tuple) -> tuple:
    """Fill `storage` with T steps. carry = (obs, state, reset) across iterations. As the
    runtime's Collector does, the policy acts on images in the compact dtype they are stored in."""
    obs, state, reset = carry
    for t in range(storage.cfg.num_steps):
        obs = _compact(obs, storage)
        out = model.act(obs, state, reset)
        next_obs, reward, terminated, truncated = env.step(out.action)
        storage.insert(t, obs, reset, state, out, reward, terminated, truncated)
        obs, state, reset = next_obs, out.state, terminated | truncated
    storage.set_last_values(model.value(obs, state, reset))
    return obs, state, reset


def _compact(obs: dict[str, torch.Tensor], storage: RolloutStorage) -> dict[str, torch.Tensor]:
    key = storage.spec.image_key
    return obs if key is None else {**obs, key: encode_depth(obs[key], storage.cfg.image_dtype)}


def train(env, model_cfg: ModelConfig, ppo_cfg: PPOConfig, iterations: int, seed: int = 0):
    """Train a fresh model on `env` for `iterations` PPO iterations; returns (model, metrics list)."""
    torch.manual_seed(seed)
    model = build_actor_critic(env.spec, model_cfg, ppo_cfg, "cpu")
    ppo = PPO(model, ppo_cfg, "cpu", seed=seed)
    storage = RolloutStorage(env.spec, model_cfg, ppo_cfg, env.n, "cpu")
    carry = (env.obs(), model.initial_state(env.n, "cpu"), torch.ones(env.n, dtype=torch.bool))
    history = []
    for _ in range(iterations):
        carry = collect(env, model, storage, carry)
        history.append(ppo.update(storage))
    return model, history


@torch.no_grad()
def evaluate_returns(env, model, steps: int, deterministic: bool = True) -> torch.Tensor:
    """Sum of rewards per env over `steps` steps from the env's current (fresh) state. (N,)"""
    obs, state = env.obs(), model.initial_state(env.n, "cpu")
    reset = torch.ones(env.n, dtype=torch.bool)
    total = torch.zeros(env.n)
    for _ in range(steps):
        out = model.act(obs, state, reset, deterministic=deterministic, with_value=False)
        obs, reward, terminated, truncated = env.step(out.action)
        total += reward
        state, reset = out.state, terminated | truncated
    return total
