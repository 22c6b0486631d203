"""GAE against hand-computed numbers (powers of two keep the arithmetic exact; gamma != lam
in the last two tests, so a swap of the two shows)."""

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


def test_gae_distinct_gamma_and_lambda():
    # gamma = 0.5, lam = 0.25 (gamma * lam = 0.125): swapping them changes every bootstrap.
    g, lam = 0.5, 0.25
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0]])  # (T=2, N=2)
    values = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    flags = torch.zeros(2, 2, dtype=torch.bool)
    adv, ret = compute_gae(rewards, values, flags, flags, torch.tensor([4.0, 4.0]), g, lam)
    # env 0 (values 0):
    #   t=1: delta = 2 + 0.5*4 - 0 = 4                      A1 = 4
    #   t=0: delta = 1 + 0.5*0 - 0 = 1                      A0 = 1 + 0.125*4 = 1.5
    #   (gamma <-> lam swapped: A1 = 2 + 0.25*4 = 3, A0 = 1 + 0.125*3 = 1.375)
    # env 1:
    #   t=1: delta = 1 + 0.5*4 - 2 = 1                      A1 = 1
    #   t=0: delta = 1 + 0.5*2 - 1 = 1                      A0 = 1 + 0.125*1 = 1.125
    #   (swapped: A1 = 1 + 1 - 2 = 0, A0 = 1 + 0.5 - 1 + 0 = 0.5)
    torch.testing.assert_close(adv, torch.tensor([[1.5, 1.125], [4.0, 1.0]]), rtol=0, atol=1e-6)
    # returns = A + V: env 0: 1.5, 4;  env 1: 1.125 + 1 = 2.125, 1 + 2 = 3
    torch.testing.assert_close(ret, torch.tensor([[1.5, 2.125], [4.0, 3.0]]), rtol=0, atol=1e-6)


def test_gae_truncation_bootstraps_with_gamma_and_cuts_the_recursion():
    # gamma = 0.5, lam = 0.25; both envs truncated (time-out) at t = 0, V of the final obs = 8.
    g, lam = 0.5, 0.25
    rewards = torch.tensor([[1.0, 1.0], [2.0, 2.0]])  # (T=2, N=2)
    values = torch.tensor([[0.0, 3.0], [0.0, 6.0]])
    terminated = torch.zeros(2, 2, dtype=torch.bool)
    truncated = torch.tensor([[True, True], [False, False]])
    truncated_values = torch.tensor([[8.0, 8.0], [0.0, 0.0]])  # only read where truncated
    adv, ret = compute_gae(rewards, values, terminated, truncated, torch.tensor([4.0, 4.0]), g, lam, truncated_values)
    # env 0 (values 0):
    #   t=1: delta = 2 + 0.5*4 - 0 = 4                      A1 = 4
    #   t=0: r' = 1 + 0.5*8 = 5; no bootstrap of V(s_1): delta = 5 - 0 = 5
    #        recursion cut: A0 = 5  (not 5 + 0.125*4 = 5.5; lam as gamma would give 1 + 0.25*8 = 3)
    # env 1:
    #   t=1: delta = 2 + 0.5*4 - 6 = -2                     A1 = -2
    #   t=0: r' = 5; delta = 5 - 3 = 2 (V(s_1) = 6 belongs to the next episode)   A0 = 2
    torch.testing.assert_close(adv, torch.tensor([[5.0, 2.0], [4.0, -2.0]]), rtol=0, atol=1e-6)
    # returns = A + V: env 0: 5, 4;  env 1: 2 + 3 = 5, -2 + 6 = 4
    torch.testing.assert_close(ret, torch.tensor([[5.0, 5.0], [4.0, 4.0]]), rtol=0, atol=1e-6)
