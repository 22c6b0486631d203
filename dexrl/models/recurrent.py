"""LSTM core that honours episode resets inside a sequence.

Convention (used everywhere in dexrl): `reset[t, b]` is True when observation t of env b is
the FIRST of a new episode, i.e. env b's previous step was terminated or truncated. The
hidden state is zeroed *before* step t is processed, so nothing of the old episode leaks
into the new one — neither during collection (T = 1) nor in truncated BPTT (T = seq_length).

Speed: a cuDNN LSTM call runs a whole segment at once, so the sequence is cut only at the
time steps where some env resets (t > 0); with no such step this is a single call. Cutting
needs one host sync (`nonzero`) per forward with T > 1; the T = 1 collection path has none.
"""

from __future__ import annotations

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (layers, B, hidden)


class LSTMCore(nn.Module):
    """(T, B, D) inputs + (T, B) reset mask + state -> (T, B, hidden) outputs + new state."""

    def __init__(self, input_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers)
        self.hidden = hidden
        self.layers = layers

    def initial_state(self, batch: int, device: torch.device | str) -> LSTMState:
        zeros = torch.zeros(self.layers, batch, self.hidden, device=device)  # (L, B, H)
        return zeros, zeros.clone()

    def forward(self, x: torch.Tensor, state: LSTMState, reset: torch.Tensor) -> tuple[torch.Tensor, LSTMState]:
        if x.dim() != 3 or reset.shape != x.shape[:2]:
            raise ValueError(f"LSTMCore wants x (T, B, D) and reset (T, B), got {tuple(x.shape)} and {tuple(reset.shape)}.")
        h, c = state  # (L, B, H) each
        steps = x.shape[0]
        bounds = [0, steps]
        if steps > 1:
            inner = torch.nonzero(reset[1:].any(dim=1)).flatten() + 1  # (S,) times with a reset
            bounds = [0, *inner.tolist(), steps]
        outs = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            keep = (~reset[start].bool()).to(h.dtype).view(1, -1, 1)  # (1, B, 1)
            h, c = h * keep, c * keep
            out, (h, c) = self.lstm(x[start:end], (h, c))  # (end-start, B, H)
            outs.append(out)
        return torch.cat(outs, dim=0), (h, c)  # (T, B, H)
