"""Reward terms: small pure functions of the state, each logged as ``reward/<name>``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dexrl.config.env import RewardConfig


@dataclass
class RewardState:
    palm_pos: torch.Tensor  # (N, 3) m
    tip_pos: torch.Tensor  # (N, 4, 3) m
    object_pos: torch.Tensor  # (N, 3) m
    goal: torch.Tensor  # (3,) m
    finger_q: torch.Tensor  # (N, 16) rad
    curl_q: torch.Tensor  # (16,) rad, the reference hand posture


def hand_to_object(s: RewardState, c: RewardConfig) -> torch.Tensor:
    """w * exp(k * d), d the largest distance from the palm and the 4 fingertips to the object."""
    points = torch.cat([s.palm_pos[:, None], s.tip_pos], dim=1)  # (N, 5, 3)
    d = (points - s.object_pos[:, None]).norm(dim=-1).amax(dim=1)  # (N,)
    return c.hand_to_object_weight * torch.exp(c.hand_to_object_sharpness * d)


def object_to_goal(s: RewardState, c: RewardConfig) -> torch.Tensor:
    """w * exp(s * ||p_obj - goal||)."""
    return c.object_to_goal_weight * torch.exp(c.object_to_goal_sharpness * (s.object_pos - s.goal).norm(dim=-1))


def lift(s: RewardState, c: RewardConfig) -> torch.Tensor:
    """w * exp(k * |goal_z - obj_z|)."""
    return c.lift_weight * torch.exp(c.lift_sharpness * (s.goal[2] - s.object_pos[:, 2]).abs())


def finger_curl(s: RewardState, c: RewardConfig) -> torch.Tensor:
    """w * ||q_fingers - q_curl||^2 (w < 0: a penalty for leaving the reference posture)."""
    return c.finger_curl_weight * (s.finger_q - s.curl_q).square().sum(dim=-1)


REWARD_TERMS = {"hand_to_object": hand_to_object, "object_to_goal": object_to_goal, "lift": lift,
                "finger_curl": finger_curl}


def compute_rewards(s: RewardState, c: RewardConfig) -> dict[str, torch.Tensor]:
    """Every term, (N,) each; the step reward is their sum."""
    return {name: fn(s, c) for name, fn in REWARD_TERMS.items()}
