"""Diagonal Gaussian math, written out (no torch.distributions) so it is cheap and testable.

All functions work in float32 and sum over the last (action) dimension.
"""

from __future__ import annotations

import math

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(a; mu, sigma) summed over actions: sum(-0.5 z^2 - log sigma - log sqrt(2 pi)), z = (a-mu)/sigma."""
    z = (actions - mean) * torch.exp(-log_std)  # (..., A)
    return (-0.5 * z.square() - log_std - _LOG_SQRT_2PI).sum(dim=-1)  # (...)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """H = sum(0.5 + log sqrt(2 pi) + log sigma)."""
    return (0.5 + _LOG_SQRT_2PI + log_std).sum(dim=-1)  # (...)


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum(log sq/sp + (sp^2 + (mp-mq)^2) / (2 sq^2) - 1/2). p: old policy, q: new."""
    var_p = torch.exp(2.0 * log_std_p)
    var_q = torch.exp(2.0 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q).square()) / (2.0 * var_q) - 0.5  # (..., A)
    return kl.sum(dim=-1)  # (...)
