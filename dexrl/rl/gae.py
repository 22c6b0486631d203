"""Generalized advantage estimation with separate `terminated` and `truncated` flags."""

from __future__ import annotations

import torch


@torch.no_grad()
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    lam: float,
    truncated_values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, each (T, N) float32.

    Inputs, all (T, N) except last_values (N,):
      rewards[t]     reward of step t (already scaled);
      values[t]      V(s_t), real scale, of the observation the action was taken in;
      terminated[t]  step t ended the episode in a true terminal state: no bootstrap;
      truncated[t]   step t ended the episode by a time-out (or other cut): the future
                     was not zero, so its value is bootstrapped;
      last_values    V(s_T) of the observation after the rollout's last step;
      truncated_values[t]  V(s'_t) of the FINAL observation of an episode truncated at step
                     t (before the env auto-reset). If None, V(s_t) is used instead, the
                     common rl_games / rsl_rl approximation (s'_t is one step after s_t).

    Math, with d_t = terminated_t or truncated_t, and u_t = truncated_t and not terminated_t:
      r'_t     = r_t + gamma * u_t * V_trunc_t           (time-out: pay the rest of the episode)
      next_t   = V(s_{t+1}) for t < T-1,  last_values for t = T-1
      delta_t  = r'_t + gamma * (1 - d_t) * next_t - V(s_t)
      A_t      = delta_t + gamma * lam * (1 - d_t) * A_{t+1},   A_T = 0
      R_t      = A_t + V(s_t)
    The (1 - d_t) factors stop both the bootstrap and the advantage recursion at an episode
    end, because s_{t+1} then belongs to the next episode.
    """
    terminated = terminated.bool()
    truncated = truncated.bool()
    done = (terminated | truncated).float()  # (T, N)
    timeout = (truncated & ~terminated).float()  # (T, N)
    bootstrap = values if truncated_values is None else truncated_values  # (T, N)
    rewards = rewards.float() + gamma * timeout * bootstrap.float()  # (T, N)
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)], dim=0).float()  # (T, N)
    not_done = 1.0 - done
    deltas = rewards + gamma * not_done * next_values - values.float()  # (T, N)
    advantages = torch.zeros_like(deltas)  # (T, N)
    running = torch.zeros_like(deltas[0])  # (N,)
    for t in reversed(range(deltas.shape[0])):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values.float()
