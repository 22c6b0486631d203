"""PPO loss terms and learning-rate rules against hand-computed numbers."""

import math

import pytest
import torch

from dexrl.config.rl import PPOConfig
from dexrl.rl import adaptive_lr, bounds_loss, linear_lr, ppo_losses, surrogate_loss, value_loss


def test_surrogate_loss_by_hand():
    # ratios 1, 2, 0.5; advantages 1, 1, -2; clip 0.2
    log_prob = torch.tensor([0.0, math.log(2.0), math.log(0.5)])
    old = torch.zeros(3)
    adv = torch.tensor([1.0, 1.0, -2.0])
    loss, frac = surrogate_loss(log_prob, old, adv, 0.2)
    # i0: max(-1*1, -1*1) = -1
    # i1: max(-1*2, -1*1.2) = -1.2           (gain capped at 1 + clip)
    # i2: max(2*0.5, 2*0.8) = 1.6            (pessimistic: clamped ratio 0.8 costs more)
    # mean = (-1 - 1.2 + 1.6) / 3 = -0.2
    assert loss.item() == pytest.approx(-0.2, abs=1e-6)
    assert frac.item() == pytest.approx(2.0 / 3.0)  # |r - 1| > 0.2 for i1, i2


def test_value_loss_by_hand():
    value = torch.tensor([1.0, 0.0])
    old = torch.tensor([0.5, 0.0])
    ret = torch.tensor([2.0, 1.0])
    # i0: unclipped (1-2)^2 = 1; clipped 0.5 + clamp(0.5, +-0.2) = 0.7 -> (0.7-2)^2 = 1.69; max 1.69
    # i1: unclipped (0-1)^2 = 1; clipped 0 + 0 = 0 -> 1; max 1
    assert value_loss(value, old, ret, 0.2).item() == pytest.approx((1.69 + 1.0) / 2)
    assert value_loss(value, old, ret, 0.0).item() == pytest.approx(1.0)  # clip off: plain MSE


def test_bounds_loss_by_hand():
    mean = torch.tensor([[1.5, -0.5], [0.0, -1.3]])
    # row 0: (1.5-1.1)^2 = 0.16;  row 1: (-1.1+1.3)^2 = 0.04;  mean over rows = 0.1
    assert bounds_loss(mean, 1.1).item() == pytest.approx(0.1, abs=1e-6)


def test_ppo_losses_total_by_hand():
    # Coefficients large enough that every term moves the total by >= 0.1 (defaults: entropy
    # 0.002 and bounds 1e-4 would hide a dropped term inside the tolerance).
    cfg = PPOConfig(critic_coef=4.0, entropy_coef=0.5, bounds_coef=1.0)  # clip 0.2, value_clip 0.2 (defaults)
    terms = ppo_losses(
        log_prob=torch.tensor([0.0, math.log(2.0)]),
        old_log_prob=torch.zeros(2),
        advantages=torch.tensor([1.0, 1.0]),
        value=torch.tensor([1.0, 0.0]),
        old_value=torch.tensor([0.5, 0.0]),
        returns=torch.tensor([2.0, 1.0]),
        entropy=torch.tensor([1.0, 3.0]),
        mean=torch.tensor([[1.5, -0.5], [0.0, -1.3]]),
        cfg=cfg,
    )
    # policy = mean(-1, -1.2) = -1.1; value = 1.345; entropy = 2; bounds = 0.1
    # total = -1.1 + 0.5*4*1.345 - 0.5*2 + 1.0*0.1 = -1.1 + 2.69 - 1.0 + 0.1 = 0.69
    # (no bounds: 0.59; entropy added: 2.69; critic_coef without 0.5: 3.38; no policy: 1.79;
    #  entropy / bounds coefficients swapped: -1.1 + 2.69 - 1.0*2 + 0.5*0.1 = -0.36)
    assert terms["policy"].item() == pytest.approx(-1.1, abs=1e-6)
    assert terms["value"].item() == pytest.approx(1.345, abs=1e-6)
    assert terms["entropy"].item() == pytest.approx(2.0)
    assert terms["bounds"].item() == pytest.approx(0.1, abs=1e-6)
    assert terms["total"].item() == pytest.approx(0.69, abs=1e-6)
    assert terms["clip_fraction"].item() == pytest.approx(0.5)


def test_adaptive_and_linear_lr():
    cfg = PPOConfig(lr=1e-4, desired_kl=0.016, lr_min=1e-6, lr_max=1e-2)
    assert adaptive_lr(1e-4, 0.05, cfg) == pytest.approx(1e-4 / 1.5)  # 0.05 > 2*0.016
    assert adaptive_lr(1e-4, 0.001, cfg) == pytest.approx(1.5e-4)  # 0.001 < 0.016/2
    assert adaptive_lr(1e-4, 0.016, cfg) == 1e-4  # inside the band
    assert adaptive_lr(0.009, 0.0, cfg) == 1e-2  # 0.0135 clamped to lr_max
    assert adaptive_lr(1.2e-6, 1.0, cfg) == 1e-6  # 8e-7 clamped to lr_min
    # linear: 1e-4 * (1 - 25/100) = 7.5e-5; at the end it stops at lr_min
    assert linear_lr(cfg, 25, 100) == pytest.approx(7.5e-5)
    assert linear_lr(cfg, 100, 100) == 1e-6


def test_config_errors_are_one_clear_sentence():
    with pytest.raises(ValueError, match="multiple of seq_length"):
        PPOConfig(num_steps=16, seq_length=5)
    with pytest.raises(ValueError, match="schedule must be one of"):
        PPOConfig(schedule="cosine")
    with pytest.raises(ValueError, match="num_minibatches"):
        PPOConfig(num_minibatches=4).check_num_envs(10)
