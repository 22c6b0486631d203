"""PPO.compute_returns against hand-computed numbers: reward scale, gamma / lambda at the call
site, truncation values, the value-normalizer refresh and advantage normalization."""

import math

import pytest
import torch

from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.models import ObsSpec
from dexrl.rl import PPO, RolloutStorage, build_actor_critic

SPEC = ObsSpec(action_dim=2, policy_vectors={"state_teacher": 3}, value_vectors={"critic": 4})
MODEL = ModelConfig(actor_kind="mlp", mlp=(8,), critic_mlp=(8,))

# Expected GAE with gamma = 0.5, lam = 0.25 (gamma * lam = 0.125), reward_scale 0.5, see _setup:
#   scaled rewards r = 0.5 * [[2, 2], [4, 4]] = [[1, 1], [2, 2]]
#   env 0 (values 0, no episode end):
#     t=1: delta = 2 + 0.5*4 - 0 = 4                       A1 = 4
#     t=0: delta = 1 + 0.5*0 - 0 = 1                       A0 = 1 + 0.125*4 = 1.5
#     (gamma <-> lam: A1 = 2 + 0.25*4 = 3, A0 = 1.375; reward_scale ignored: A1 = 6, A0 = 2.75)
#   env 1 (values 3, 6; truncated at t=0 with V(final obs) = 8):
#     t=1: delta = 2 + 0.5*4 - 6 = -2                      A1 = -2
#     t=0: r' = 1 + 0.5*8 = 5; no bootstrap, recursion cut: delta = 5 - 3 = 2    A0 = 2
#     (V(s_0) = 3 instead of the truncation value: r' = 2.5, A0 = -0.5)
RAW_ADV = [[1.5, 2.0], [4.0, -2.0]]  # (T, N)
# returns = A + V: env 0: 1.5, 4;  env 1: 2 + 3 = 5, -2 + 6 = 4
RETURNS = [[1.5, 5.0], [4.0, 4.0]]


def _setup(normalize_advantage):
    cfg = PPOConfig(num_steps=2, seq_length=2, num_minibatches=1, gamma=0.5, lam=0.25, reward_scale=0.5,
                    normalize_advantage=normalize_advantage)
    model = build_actor_critic(SPEC, MODEL, cfg, "cpu")
    storage = RolloutStorage(SPEC, MODEL, cfg, 2, "cpu")
    storage.rewards.copy_(torch.tensor([[2.0, 2.0], [4.0, 4.0]]))  # (T=2, N=2), unscaled
    storage.values.copy_(torch.tensor([[0.0, 3.0], [0.0, 6.0]]))
    storage.truncated[0, 1] = True
    storage.truncated_values.copy_(torch.tensor([[0.0, 8.0], [0.0, 0.0]]))
    storage.set_last_values(torch.tensor([4.0, 4.0]))
    return PPO(model, cfg, "cpu"), model, storage


def test_compute_returns_by_hand_and_value_normalizer_refresh():
    ppo, model, storage = _setup(normalize_advantage=False)
    vn = model.value_normalizer
    assert vn.count.item() == 0.0  # fresh: no statistics yet
    ppo.compute_returns(storage)
    torch.testing.assert_close(storage.advantages, torch.tensor(RAW_ADV), rtol=0, atol=1e-6)
    torch.testing.assert_close(storage.returns, torch.tensor(RETURNS), rtol=0, atol=1e-6)
    torch.testing.assert_close(storage.rewards, torch.tensor([[2.0, 2.0], [4.0, 4.0]]))  # stored rewards stay unscaled
    # The value normalizer folds in the T * N = 4 returns (not the advantages):
    #   mean = (1.5 + 5 + 4 + 4) / 4 = 14.5 / 4 = 3.625   (advantages would give 5.5 / 4 = 1.375)
    #   M2 = (-2.125)^2 + 1.375^2 + 0.375^2 + 0.375^2 = 4.515625 + 1.890625 + 0.140625 + 0.140625 = 6.6875
    assert vn.count.item() == 4.0
    assert vn.mean.item() == pytest.approx(3.625, abs=1e-9)
    assert vn.m2.item() == pytest.approx(6.6875, abs=1e-9)
    # Again on the same rollout: returns are real scale, independent of the normalizer's
    # statistics, and the same 4 returns are folded in once more (count 8, mean kept, M2 doubled).
    ppo.compute_returns(storage)
    torch.testing.assert_close(storage.returns, torch.tensor(RETURNS), rtol=0, atol=1e-6)
    assert vn.count.item() == 8.0
    assert vn.mean.item() == pytest.approx(3.625, abs=1e-9)
    assert vn.m2.item() == pytest.approx(2 * 6.6875, abs=1e-9)


def test_compute_returns_normalizes_advantages_only():
    ppo, model, storage = _setup(normalize_advantage=True)
    ppo.compute_returns(storage)
    # raw advantages 1.5, 2, 4, -2: mean = 5.5 / 4 = 1.375
    #   deviations 0.125, 0.625, 2.625, -3.375; sum of squares
    #   0.015625 + 0.390625 + 6.890625 + 11.390625 = 18.6875; unbiased std = sqrt(18.6875 / 3) = 2.4958
    std = math.sqrt(18.6875 / 3)
    expected = torch.tensor([[0.125, 0.625], [2.625, -3.375]]) / std  # approx [[0.0501, 0.2504], [1.0518, -1.3523]]
    torch.testing.assert_close(storage.advantages, expected, rtol=0, atol=1e-6)
    assert storage.advantages.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert storage.advantages.std().item() == pytest.approx(1.0, abs=1e-6)
    # returns and the value statistics come from the raw advantages, not the normalized ones
    torch.testing.assert_close(storage.returns, torch.tensor(RETURNS), rtol=0, atol=1e-6)
    assert model.value_normalizer.count.item() == 4.0
    assert model.value_normalizer.mean.item() == pytest.approx(3.625, abs=1e-9)


def test_advantages_are_normalized_over_every_ranks_rollout():
    """Two data-parallel ranks holding [1.5, 2] and [4, -2] scale them as one process holding
    all four would (the numbers of the test above); by their own statistics rank 0 would get
    [-0.707, 0.707]."""
    from dexrl.rl.normalizer import batch_moments, merge_moments
    from dexrl.rl.ppo import normalize_advantages

    ranks = [torch.tensor([[1.5], [2.0]]), torch.tensor([[4.0], [-2.0]])]  # (T, N) each

    def all_ranks(count, mean, m2):  # what data_parallel's all-gather and merge return on rank 0
        return merge_moments((count, mean, m2), batch_moments(ranks[1], ()))

    std = math.sqrt(18.6875 / 3)
    torch.testing.assert_close(normalize_advantages(ranks[0], all_ranks), torch.tensor([[0.125], [0.625]]) / std,
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(normalize_advantages(ranks[0]), torch.tensor([[-0.25], [0.25]]) / math.sqrt(0.125),
                               rtol=0, atol=1e-6)
