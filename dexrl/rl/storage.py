"""Rollout storage (T, N, ...) on the learner device, allocated once.

Images are kept compact: float16 metres (2 B/pixel, ~0.5 mm resolution at 1 m) or uint16
millimetres (2 B/pixel, 1 mm resolution, 65.535 m max); with image_storage 'host' they live in
CPU memory (pinned for a CUDA learner) and minibatches are copied to the learner device.
Vector observations, actions and scalars are float32; flags are bool. Recurrent states are
kept only at the start of every truncated-BPTT chunk (t = 0, S, 2S, ... with S = seq_length):
the update re-runs each chunk from exactly the state the policy had when it acted there.

Data flow per iteration, t = 0 .. T-1:
    out = model.act(obs, state, reset)
    env steps with out.action -> rewards, terminated, truncated, next obs
    storage.insert(t, obs, reset, state, out, rewards, terminated, truncated[, truncated_values])
    state, reset = out.state, terminated | truncated
then storage.set_last_values(model.act(next_obs, state, reset).value) (or model.value).
`bytes_per_env` predicts the allocation from configs alone, for the capacity planner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.models.actor_critic import PolicyOutput, State, recurrent_state_shapes
from dexrl.models.depth_codec import IMAGE_TORCH_DTYPES, encode_depth, select
from dexrl.models.spec import ObsSpec

ENV = -1  # placeholder for N in a layout shape
ALL = slice(None)  # every env's row


def storage_layout(spec: ObsSpec, model_cfg: ModelConfig, ppo_cfg: PPOConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every buffer: name -> (shape with ENV where N goes, dtype). Single source of truth for
    both `RolloutStorage` and `bytes_per_env`."""
    T, A, f32 = ppo_cfg.num_steps, spec.action_dim, torch.float32
    layout: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    if spec.image_key is not None:
        layout[f"obs/{spec.image_key}"] = ((T, ENV, *spec.image_shape), IMAGE_TORCH_DTYPES[ppo_cfg.image_dtype])
    for key, dim in spec.vector_dims.items():
        layout[f"obs/{key}"] = ((T, ENV, dim), f32)
    for name in ("actions", "action_mean", "action_std"):
        layout[name] = ((T, ENV, A), f32)
    for name in ("log_probs", "values", "rewards", "truncated_values", "advantages", "returns"):
        layout[name] = ((T, ENV), f32)
    for name in ("terminated", "truncated", "resets"):
        layout[name] = ((T, ENV), torch.bool)
    layout["last_values"] = ((ENV,), f32)
    for name, (layers, hidden) in recurrent_state_shapes(model_cfg).items():
        layout[f"states/{name}"] = ((ppo_cfg.num_chunks, layers, ENV, hidden), f32)
    return layout


def image_device(ppo_cfg: PPOConfig, device: torch.device) -> torch.device:
    """Where rollout images live: the learner device, or the CPU for image_storage 'host'."""
    return torch.device("cpu") if ppo_cfg.image_storage == "host" else device


def bytes_per_env(spec: ObsSpec, model_cfg: ModelConfig, ppo_cfg: PPOConfig, where: str = "all") -> int:
    """Bytes of rollout storage per environment: 'all', or only the part on the learner
    'device' or on the 'host' (images with image_storage 'host'). E.g. 160x120 depth,
    T = 16, float16: 16 * 120 * 160 * 2 B = 614,400 B for the images alone."""
    if where not in ("all", "device", "host"):
        raise ValueError(f"where must be 'all', 'device' or 'host', got {where!r}")
    image_name = f"obs/{spec.image_key}"
    total = 0
    for name, (shape, dtype) in storage_layout(spec, model_cfg, ppo_cfg).items():
        on_host = name == image_name and ppo_cfg.image_storage == "host"
        if where == "all" or (where == "host") == on_host:
            per_env = math.prod(d for d in shape if d != ENV)
            total += per_env * torch.empty((), dtype=dtype).element_size()
    return total


@dataclass
class Minibatch:
    """B = K * n sequences of length S: K chunks of each of n environments."""

    obs: dict[str, torch.Tensor]  # (S, B, ...) images compact (the encoder decodes them)
    actions: torch.Tensor  # (S, B, A)
    log_probs: torch.Tensor  # (S, B)
    values: torch.Tensor  # (S, B) real scale, from collection
    advantages: torch.Tensor  # (S, B)
    returns: torch.Tensor  # (S, B) real scale
    action_mean: torch.Tensor  # (S, B, A)
    action_std: torch.Tensor  # (S, B, A)
    resets: torch.Tensor  # (S, B) bool
    states: State  # name -> (layers, B, hidden) at each chunk start


class RolloutStorage:
    def __init__(self, spec: ObsSpec, model_cfg: ModelConfig, ppo_cfg: PPOConfig, num_envs: int, device: torch.device | str) -> None:
        ppo_cfg.check_num_envs(num_envs)
        self.spec, self.cfg = spec, ppo_cfg
        self.num_envs, self.device = num_envs, torch.device(device)
        self.image_device = image_device(ppo_cfg, self.device)
        self.obs: dict[str, torch.Tensor] = {}
        self.states: dict[str, torch.Tensor] = {}
        image_name = f"obs/{spec.image_key}"
        for name, (shape, dtype) in storage_layout(spec, model_cfg, ppo_cfg).items():
            size = tuple(num_envs if d == ENV else d for d in shape)
            if name == image_name:
                buf = torch.zeros(size, dtype=dtype, device=self.image_device, pin_memory=self.image_device != self.device)
            else:
                buf = torch.zeros(size, dtype=dtype, device=self.device)
            group, _, key = name.partition("/")
            if group == "obs":
                self.obs[key] = buf
            elif group == "states":
                self.states[key] = buf
            else:
                setattr(self, name, buf)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every allocated buffer by layout name (for checkpoints and memory accounting)."""
        named = {f"obs/{k}": v for k, v in self.obs.items()} | {f"states/{k}": v for k, v in self.states.items()}
        return named | {name: getattr(self, name) for name in self._scalar_names()}

    def _scalar_names(self) -> tuple[str, ...]:
        return ("actions", "action_mean", "action_std", "log_probs", "values", "rewards", "truncated_values",
                "advantages", "returns", "terminated", "truncated", "resets", "last_values")

    @torch.no_grad()
    def insert_obs(self, step: int, obs: dict[str, torch.Tensor], rows: slice = ALL) -> None:
        """Record step t's observations (image (n, C, H, W) float metres or compact, vectors
        (n, D)) of the envs ``rows`` (all N, or a pipelined world group's n)."""
        for key, buf in self.obs.items():
            src = obs[key]
            if key == self.spec.image_key:
                buf[step, rows].copy_(encode_depth(src, self.cfg.image_dtype), non_blocking=True)  # see wait_for_copies
            else:
                buf[step, rows] = src

    @torch.no_grad()
    def insert(
        self,
        step: int,
        obs: dict[str, torch.Tensor] | None,
        reset: torch.Tensor,
        state: State,
        out: PolicyOutput,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        truncated_values: torch.Tensor | None = None,
        rows: slice = ALL,
    ) -> None:
        """Record step t for the envs ``rows`` (all N, or a pipelined world group's n; every
        tensor below has n rows). obs: the raw observations `out` was computed from (see
        insert_obs), or None if insert_obs recorded them already; reset (n,) the flags passed
        to act; state: the recurrent state PASSED TO act (saved at chunk starts); rewards,
        terminated, truncated (n,) from env.step; truncated_values (n,) V of the final
        observation of truncated episodes, or None to use out.value (see compute_gae)."""
        if out.value is None:
            raise ValueError("RolloutStorage.insert needs out.value; call act(..., with_value=True) while collecting.")
        if obs is not None:
            self.insert_obs(step, obs, rows)
        if step % self.cfg.seq_length == 0:
            for key, buf in self.states.items():
                buf[step // self.cfg.seq_length, :, rows] = state[key]  # (L, n, H)
        self.resets[step, rows] = reset
        self.actions[step, rows] = out.action
        self.action_mean[step, rows] = out.mean
        self.action_std[step, rows] = out.std
        self.log_probs[step, rows] = out.log_prob
        self.values[step, rows] = out.value
        self.rewards[step, rows] = rewards
        self.terminated[step, rows] = terminated
        self.truncated[step, rows] = truncated
        self.truncated_values[step, rows] = out.value if truncated_values is None else truncated_values

    @torch.no_grad()
    def set_last_values(self, values: torch.Tensor) -> None:
        """V (N,), real scale, of the observations after the rollout's last step."""
        self.last_values.copy_(values)

    def minibatch_env_ids(self, num_minibatches: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """A random split of the N env columns into num_minibatches slices of N / num_minibatches."""
        self.wait_for_copies()
        return torch.randperm(self.num_envs, generator=generator).chunk(num_minibatches)  # CPU, (n,) each

    def minibatches(self, num_minibatches: int, generator: torch.Generator | None = None) -> Iterator[Minibatch]:
        """Random environment slices: each minibatch holds N / num_minibatches env columns, all T
        steps, cut into K = T / S chunks of S = seq_length steps (batch B = K * n)."""
        for env_ids in self.minibatch_env_ids(num_minibatches, generator):
            yield self.gather(env_ids)

    def wait_for_copies(self) -> None:
        """Images go to pinned host memory asynchronously; the CPU must not read them earlier."""
        if self.image_device != self.device and self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def _chunks(self, buf: torch.Tensor, env_ids: torch.Tensor) -> torch.Tensor:
        """(T, N, ...) -> (S, K * n, ...) on the learner device, batch index k * n + j = chunk k of env j."""
        S, K = self.cfg.seq_length, self.cfg.num_chunks
        x = select(buf, 1, env_ids.to(buf.device)).to(self.device, non_blocking=True)  # (T, n, ...)
        x = x.reshape(K, S, *x.shape[1:]).transpose(0, 1)  # (S, K, n, ...)
        return x.reshape(S, -1, *x.shape[3:])  # (S, K*n, ...)

    def unchunk(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of the minibatch layout: (S, K * n, ...) -> (T, n, ...)."""
        S, K = self.cfg.seq_length, self.cfg.num_chunks
        x = x.reshape(S, K, -1, *x.shape[2:]).transpose(0, 1)  # (K, S, n, ...)
        return x.reshape(S * K, *x.shape[2:])  # (T, n, ...)

    def gather(self, env_ids: torch.Tensor) -> Minibatch:
        """The minibatch of env columns env_ids (n,), any device."""
        env_ids = env_ids.to(self.device)
        obs = {}
        for key, buf in self.obs.items():
            obs[key] = self._chunks(buf, env_ids)
        states = {}
        for key, buf in self.states.items():
            x = buf.index_select(2, env_ids)  # (K, L, n, H)
            states[key] = x.transpose(0, 1).reshape(x.shape[1], -1, x.shape[3])  # (L, K*n, H)
        take = lambda buf: self._chunks(buf, env_ids)  # noqa: E731
        return Minibatch(
            obs=obs, actions=take(self.actions), log_probs=take(self.log_probs), values=take(self.values),
            advantages=take(self.advantages), returns=take(self.returns), action_mean=take(self.action_mean),
            action_std=take(self.action_std), resets=take(self.resets), states=states,
        )
