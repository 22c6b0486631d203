"""PPO end to end on tiny batched torch tasks (CPU, a few seconds each).

- PointMass: continuous control with time-out truncation and an asymmetric critic.
- CueMemory: the cue is seen only at an episode's first step; the reward at its last step
  pays for remembering it. An MLP policy cannot beat chance (0); the LSTM policy reaches ~1.
"""

import torch
from toy_tasks import CueMemory, PointMass, evaluate_returns, train

from dexrl.config.rl import ModelConfig, PPOConfig

torch.set_num_threads(1)  # tiny nets: threads only add contention (the other core is busy)


def _ppo_cfg(**kw) -> PPOConfig:
    base = dict(num_steps=16, num_epochs=4, lr=1e-3, lr_max=1e-2, desired_kl=0.01, gamma=0.97, lam=0.95,
                entropy_coef=0.0, reward_scale=1.0, bf16=False)
    return PPOConfig(**{**base, **kw})


def test_ppo_learns_point_mass():
    # Measured: random (std 1) policy ~ -24.6, zero action ~ -21.0, trained (60 it.) ~ -3.3.
    model_cfg = ModelConfig(actor_kind="mlp", mlp=(64, 64), critic_mlp=(64, 64), init_log_std=-0.5)
    model, history = train(PointMass(64, seed=0), model_cfg, _ppo_cfg(seq_length=16, num_minibatches=4), iterations=60)
    trained = evaluate_returns(PointMass(256, seed=123), model, steps=30).mean().item()
    torch.manual_seed(1)
    untrained, _ = train(PointMass(64, seed=0), model_cfg, _ppo_cfg(seq_length=16, num_minibatches=4), iterations=0)
    untrained_return = evaluate_returns(PointMass(256, seed=123), untrained, steps=30, deterministic=False).mean().item()
    assert untrained_return < -15.0
    assert trained > -6.0, f"mean 30-step return {trained:.2f} (untrained {untrained_return:.2f})"
    assert all(torch.isfinite(torch.tensor(list(m.values()))).all() for m in history)


def _memory_score(actor_kind: str) -> float:
    model_cfg = ModelConfig(actor_kind=actor_kind, lstm_hidden=32, lstm_layers=1, mlp=(32,), critic_mlp=(32, 32), init_log_std=-0.5)
    ppo_cfg = _ppo_cfg(seq_length=8, num_minibatches=2, gamma=0.99)  # 2 chunks, resets inside them
    model, _ = train(CueMemory(64, seed=0), model_cfg, ppo_cfg, iterations=40)
    env = CueMemory(256, seed=7, staggered=False)
    env.cue = torch.tensor([1.0, -1.0]).repeat(128)  # balanced cues: chance is exactly 0
    return evaluate_returns(env, model, steps=env.length).mean().item()


def test_memory_task_lstm_solves_mlp_cannot():
    # Measured: LSTM 1.00, MLP 0.00 (its last-step action cannot depend on the cue).
    lstm = _memory_score("lstm")
    mlp = _memory_score("mlp")
    assert abs(mlp) < 0.1, f"MLP scored {mlp:.3f}; without memory it should be at chance (0)"
    assert lstm > 0.8, f"LSTM scored {lstm:.3f}; it should remember the cue (max 1)"
