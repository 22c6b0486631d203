"""LSTMCore: resets zero the state before their step, inside a sequence, without leaking."""

import torch

from dexrl.models import LSTMCore

torch.set_num_threads(1)


def _reference(core, x, state, reset):
    """Plain step-by-step loop with explicit zeroing: the definition of correct."""
    h, c = state
    outs = []
    for t in range(x.shape[0]):
        keep = (~reset[t]).float().view(1, -1, 1)
        h, c = h * keep, c * keep
        out, (h, c) = core.lstm(x[t : t + 1], (h, c))
        outs.append(out)
    return torch.cat(outs), (h, c)


def test_segmented_forward_equals_step_loop():
    torch.manual_seed(0)
    core = LSTMCore(5, 8, 2)
    T, B = 7, 4
    x = torch.randn(T, B, 5)
    state = (torch.randn(2, B, 8), torch.randn(2, B, 8))
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[0, 1] = reset[3, 0] = reset[3, 2] = reset[5, 3] = True
    out, (h, c) = core(x, state, reset)
    ref, (h_ref, c_ref) = _reference(core, x, state, reset)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


def test_reset_mid_sequence_does_not_leak():
    torch.manual_seed(1)
    core = LSTMCore(3, 6, 1)
    T, B, split = 6, 2, 3
    x = torch.randn(T, B, 3)
    state = (torch.randn(1, B, 6), torch.randn(1, B, 6))
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[split, 0] = True  # env 0 starts a new episode at t = 3
    out, _ = core(x, state, reset)
    fresh = core.initial_state(1, "cpu")
    second, _ = core(x[split:, :1], fresh, torch.zeros(T - split, 1, dtype=torch.bool))
    torch.testing.assert_close(out[split:, 0], second[:, 0])  # as if started from zero state
    untouched, _ = core(x[:, 1:], (state[0][:, 1:], state[1][:, 1:]), torch.zeros(T, 1, dtype=torch.bool))
    torch.testing.assert_close(out[:, 1], untouched[:, 0])  # env 1 unaffected by env 0's reset
    no_reset, _ = core(x, state, torch.zeros(T, B, dtype=torch.bool))
    assert not torch.allclose(no_reset[split:, 0], out[split:, 0])  # the reset did change something
