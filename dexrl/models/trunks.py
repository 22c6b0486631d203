"""Sequence trunks shared by the policy and the value networks.

Both trunks take (T, B, D) features, a recurrent-state dict and a (T, B) reset mask, and
return (T, B, F) features and the new state dict, so a network never branches on its kind:
- `FeedForwardTrunk`: MLP applied per step; its state is the empty dict.
- `RecurrentTrunk`:   LSTM (resets honoured, see recurrent.py) followed by an MLP
                      (paper: the MLP comes after the LSTM, unlike IMPALA).
State entries are named `<prefix>_h` / `<prefix>_c`, each (layers, B, hidden).
"""

from __future__ import annotations

import torch
from torch import nn

from dexrl.models.recurrent import LSTMCore

_ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(in_dim: int, sizes: tuple[int, ...], activation: str) -> nn.Sequential:
    """Linear -> activation for every size (no output layer)."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_dim, size), _ACTIVATIONS[activation]()]
        in_dim = size
    return nn.Sequential(*layers)


class FeedForwardTrunk(nn.Module):
    def __init__(self, in_dim: int, sizes: tuple[int, ...], activation: str) -> None:
        super().__init__()
        self.net = mlp(in_dim, sizes, activation)
        self.out_dim = sizes[-1]

    def state_shapes(self) -> dict[str, tuple[int, int]]:
        return {}

    def forward(self, x: torch.Tensor, state: dict, reset: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.net(x), {}  # (T, B, F)


class RecurrentTrunk(nn.Module):
    def __init__(self, in_dim: int, hidden: int, layers: int, sizes: tuple[int, ...], activation: str, prefix: str) -> None:
        super().__init__()
        self.core = LSTMCore(in_dim, hidden, layers)
        self.net = mlp(hidden, sizes, activation)
        self.out_dim = sizes[-1]
        self.keys = (f"{prefix}_h", f"{prefix}_c")

    def state_shapes(self) -> dict[str, tuple[int, int]]:
        return {key: (self.core.layers, self.core.hidden) for key in self.keys}

    def forward(self, x: torch.Tensor, state: dict, reset: torch.Tensor) -> tuple[torch.Tensor, dict]:
        h_key, c_key = self.keys
        out, (h, c) = self.core(x, (state[h_key], state[c_key]), reset)  # (T, B, hidden)
        return self.net(out), {h_key: h, c_key: c}  # (T, B, F)


def build_trunk(kind: str, in_dim: int, hidden: int, layers: int, sizes: tuple[int, ...], activation: str, prefix: str) -> nn.Module:
    if kind == "lstm":
        return RecurrentTrunk(in_dim, hidden, layers, sizes, activation, prefix)
    return FeedForwardTrunk(in_dim, sizes, activation)
