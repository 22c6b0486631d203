"""Running mean / variance normalizers (float64 statistics) for vector observations and values.

Statistics are (count, mean, M2) with var = M2 / count, merged with Chan et al.'s parallel
rule, so a batch, a rank or a whole run all fold in the same way:
    n = n_a + n_b,  d = mean_b - mean_a
    mean = mean_a + d * n_b / n
    M2   = M2_a + M2_b + d^2 * n_a * n_b / n
Several ranks: pass `reduce_fn(count, mean, m2) -> (count, mean, m2)` to `update`; it gets
this rank's batch moments and must return the moments of all ranks' batches (e.g. an
all_gather followed by `merge_moments_stacked`). Every rank then applies the same update.
This package never imports torch.distributed; the runtime's comm module provides reduce_fn.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Moments = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # count (), mean (*S,), m2 (*S,) float64
ReduceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Moments]


def batch_moments(x: torch.Tensor, shape: tuple[int, ...]) -> Moments:
    """Moments of x (..., *shape) over every leading dimension, float64."""
    flat = x.detach().reshape(-1, *shape).double()  # (B, *S)
    count = torch.tensor(float(flat.shape[0]), dtype=torch.float64, device=x.device)
    mean = flat.mean(dim=0)  # (*S,)
    m2 = (flat - mean).square().sum(dim=0)  # (*S,)
    return count, mean, m2


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan's parallel merge of two (count, mean, M2) triples; see module docstring."""
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    safe_n = n.clamp_min(1e-300)  # both empty: weights become 0 and mean_a is kept (no host sync)
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / safe_n)
    m2 = m2_a + m2_b + delta.square() * (n_a * n_b / safe_n)
    return n, mean, m2


def merge_moments_stacked(counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor) -> Moments:
    """Fold R triples stacked on dim 0: counts (R,), means (R, *S), m2s (R, *S)."""
    total = (counts[0], means[0], m2s[0])
    for r in range(1, counts.shape[0]):
        total = merge_moments(total, (counts[r], means[r], m2s[r]))
    return total


class RunningNormalizer(nn.Module):
    """y = clamp((x - mean) / sqrt(var + eps), -clip, clip) with running float64 stats.

    With no data yet (count 0) it is the identity (mean 0, var 1)."""

    def __init__(self, shape: tuple[int, ...] = (), eps: float = 1e-8, clip: float | None = None) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.eps = eps
        self.clip = clip
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(self.shape, dtype=torch.float64))

    @property
    def var(self) -> torch.Tensor:
        # Population variance; 1 before any data. torch.where avoids a host sync per act().
        return torch.where(self.count > 0, self.m2 / self.count.clamp_min(1.0), torch.ones_like(self.m2))  # (*S,)

    @torch.no_grad()
    def update(self, x: torch.Tensor, reduce_fn: ReduceFn | None = None) -> None:
        """Fold a batch x (..., *shape) into the statistics (all ranks' batches with reduce_fn)."""
        moments = batch_moments(x, self.shape)
        if reduce_fn is not None:
            moments = reduce_fn(*moments)
        count, mean, m2 = merge_moments((self.count, self.mean, self.m2), moments)
        self.count.copy_(count)
        self.mean.copy_(mean)
        self.m2.copy_(m2)

    def _scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.float(), torch.sqrt(self.var + self.eps).float()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._scale()
        y = (x.float() - mean) / std
        return y if self.clip is None else y.clamp(-self.clip, self.clip)

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        mean, std = self._scale()
        return y.float() * std + mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)


class ObsNormalizer(nn.Module):
    """One RunningNormalizer per vector key; other keys (images) pass through untouched."""

    def __init__(self, vector_dims: dict[str, int], clip: float | None = 5.0) -> None:
        super().__init__()
        self.norms = nn.ModuleDict({key: RunningNormalizer((dim,), clip=clip) for key, dim in vector_dims.items()})

    def forward(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (self.norms[k].normalize(v) if k in self.norms else v) for k, v in obs.items()}

    @torch.no_grad()
    def update(self, obs: dict[str, torch.Tensor], reduce_fn: ReduceFn | None = None) -> None:
        """obs[key] (..., D) raw; keys this normalizer does not know are ignored."""
        for key, norm in self.norms.items():
            norm.update(obs[key], reduce_fn)
