"""GAE against hand-computed numbers (gamma = lam = 0.5 keeps the arithmetic exact)."""

import torch

from dexrl.rl import compute_gae

G = L = 0.5  # gamma, lambda -> gamma * lam = 0.25


def _inputs():
    # env 0: terminated at t = 1.   env 1: truncated (time-out) at t = 1.
    rewards = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])  # (T=3, N=2)
    values = torch.tensor([[0.5, 1.0], [1.0, 2.0], [1.5, 4.0]])
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.tensor([[False, False], [False, True], [False, False]])
    last_values = torch.tensor([2.0, 8.0])
    return rewards, values, terminated, truncated, last_values


def test_gae_terminated_and_truncated_with_final_values():
    rewards, values, terminated, truncated, last_values = _inputs()
    # V of the final observation of env 1's truncated episode (before auto-reset) is 6.0.
    truncated_values = torch.tensor([[0.0, 0.0], [0.0, 6.0], [0.0, 0.0]])
    adv, ret = compute_gae(rewards, values, terminated, truncated, last_values, G, L, truncated_values)
    # env 0:
    #   t=2: delta = 3 + 0.5*2.0 - 1.5 = 2.5                     A2 = 2.5
    #   t=1: terminated -> no bootstrap: delta = 2 - 1.0 = 1.0    A1 = 1.0 (recursion cut)
    #   t=0: delta = 1 + 0.5*1.0 - 0.5 = 1.0                     A0 = 1.0 + 0.25*1.0 = 1.25
    # env 1:
    #   t=2: delta = 0 + 0.5*8.0 - 4.0 = 0.0                     A2 = 0.0
    #   t=1: truncated -> r' = 1 + 0.5*6.0 = 4; delta = 4 - 2 = 2 A1 = 2.0 (recursion cut)
    #   t=0: delta = 0 + 0.5*2.0 - 1.0 = 0.0                     A0 = 0.0 + 0.25*2.0 = 0.5
    expected_adv = torch.tensor([[1.25, 0.5], [1.0, 2.0], [2.5, 0.0]])
    torch.testing.assert_close(adv, expected_adv)
    # returns = A + V
    torch.testing.assert_close(ret, torch.tensor([[1.75, 1.5], [2.0, 4.0], [4.0, 4.0]]))


def test_gae_truncated_without_final_values_uses_current_value():
    rewards, values, terminated, truncated, last_values = _inputs()
    adv, _ = compute_gae(rewards, values, terminated, truncated, last_values, G, L)
    # env 1, t=1: r' = 1 + 0.5*V(s_1) = 1 + 0.5*2.0 = 2; delta = 2 - 2 = 0  -> A1 = 0
    #        t=0: delta = 0 + 0.5*2.0 - 1.0 = 0                            -> A0 = 0 + 0.25*0 = 0
    torch.testing.assert_close(adv[:, 1], torch.tensor([0.0, 0.0, 0.0]))
    torch.testing.assert_close(adv[:, 0], torch.tensor([1.25, 1.0, 2.5]))  # env 0 unchanged


def test_gae_terminated_wins_over_truncated():
    rewards, values, terminated, truncated, last_values = _inputs()
    truncated = truncated | terminated  # env 0, t=1 is now both: must not bootstrap
    truncated_values = torch.full_like(values, 100.0)
    adv, _ = compute_gae(rewards, values, terminated, truncated, last_values, G, L, truncated_values)
    assert adv[1, 0].item() == 1.0  # 2 - 1.0, no 0.5*100 added


def test_gae_monte_carlo_limit():
    # gamma = lam = 1, no episode end: A_t = sum_{k>=t} r_k + V_last - V_t.
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[1.0], [1.0], [1.0]])
    flags = torch.zeros(3, 1, dtype=torch.bool)
    adv, ret = compute_gae(rewards, values, flags, flags, torch.tensor([10.0]), 1.0, 1.0)
    # returns: 1+2+3+10 = 16, 2+3+10 = 15, 3+10 = 13
    torch.testing.assert_close(ret[:, 0], torch.tensor([16.0, 15.0, 13.0]))
    torch.testing.assert_close(adv[:, 0], torch.tensor([15.0, 14.0, 12.0]))
