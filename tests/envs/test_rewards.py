"""Reward terms on a hand-built state of two worlds, every number derived by hand."""

import torch

from dexrl.config.env import RewardConfig
from dexrl.envs.rewards import REWARD_TERMS, RewardState, compute_rewards

GOAL = (-0.5, 0.0, 0.75)
CURL = (0.0, 0.3, 0.3, 0.3) * 3 + (1.5, 0.0, 1.0, 0.5)
# Defaults, but hand_to_object's weight 2 (the default 1 would not show a dropped weight).
CFG = RewardConfig(hand_to_object_weight=2.0, hand_to_object_sharpness=-10.0, object_to_goal_weight=5.0,
                   object_to_goal_sharpness=-15.0, lift_weight=5.0, lift_sharpness=-8.5, finger_curl_weight=-0.01)


def _state() -> RewardState:
    obj = torch.tensor([[-0.5, 0.0, 0.55],  # world 0: 0.2 m straight under the goal
                        [-0.2, 0.0, 1.15]])  # world 1: goal + (0.3, 0, 0.4), above it
    # Offsets from the object: world 0's farthest point is a fingertip (0.1 m), world 1's the palm (0.2 m).
    palm = obj + torch.tensor([[0.0, 0.03, 0.04],  # 0.05
                               [0.0, 0.2, 0.0]])  # 0.2
    tips = obj[:, None] + torch.tensor([
        [[0.06, 0.0, 0.08], [0.0, 0.02, 0.0], [-0.03, 0.0, -0.04], [0.0, 0.0, 0.07]],  # 0.1, 0.02, 0.05, 0.07
        [[0.1, 0.0, 0.0], [0.0, 0.06, 0.08], [0.0, 0.0, 0.0], [0.05, 0.0, 0.0]],  # 0.1, 0.1, 0, 0.05
    ])
    curl = torch.tensor(CURL)
    fingers = curl.repeat(2, 1)
    fingers[1, 1] += 0.3  # world 1: index j1 0.3 rad past the reference,
    fingers[1, 15] -= 0.4  # thumb j3 0.4 rad short of it
    return RewardState(palm_pos=palm, tip_pos=tips, object_pos=obj, goal=torch.tensor(GOAL), finger_q=fingers,
                       curl_q=curl)


def test_reward_terms_by_hand():
    terms = compute_rewards(_state(), CFG)
    assert set(terms) == set(REWARD_TERMS)
    want = {
        # w * exp(k * largest of palm and tip distances): 2 exp(-10 * 0.1) = 2 exp(-1) = 0.7357589;
        # 2 exp(-10 * 0.2) = 2 exp(-2) = 0.2706706.
        "hand_to_object": [0.7357589, 0.2706706],
        # 5 exp(-15 * |obj - goal|): |(0, 0, -0.2)| = 0.2 -> 5 exp(-3) = 0.2489353;
        # |(0.3, 0, 0.4)| = 0.5 -> 5 exp(-7.5) = 0.0027654.
        "object_to_goal": [0.2489353, 0.0027654],
        # 5 exp(-8.5 * |goal_z - obj_z|), height only: |0.75 - 0.55| = 0.2 -> 5 exp(-1.7) = 0.9134176;
        # |0.75 - 1.15| = 0.4 (above the goal counts as far as below) -> 5 exp(-3.4) = 0.1668663.
        "lift": [0.9134176, 0.1668663],
        # -0.01 * sum of squared deviations: world 0 at the reference -> 0 (signed zero);
        # world 1 -0.01 * (0.3^2 + 0.4^2) = -0.01 * 0.25 = -0.0025.
        "finger_curl": [0.0, -0.0025],
    }
    for name, values in want.items():
        torch.testing.assert_close(terms[name], torch.tensor(values), atol=2e-6, rtol=1e-5, msg=name)
