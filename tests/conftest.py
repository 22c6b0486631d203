"""Shared fixtures."""

import pytest

from dexrl.config.env import CameraConfig, EnvConfig
from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.config.train import TrainConfig


def tiny_config(max_iterations: int, **env) -> TrainConfig:
    """4 worlds, 16x12 depth, a network of a few thousand weights: seconds per iteration."""
    return TrainConfig(
        preset="tiny",
        env=EnvConfig(num_envs=4, camera=CameraConfig(width=16, height=12), **env),
        model=ModelConfig(lstm_hidden=16, lstm_layers=1, mlp=(16, 16), critic_mlp=(16, 16), encoder_channels=(4, 4, 4, 4)),
        ppo=PPOConfig(num_steps=4, seq_length=4, num_minibatches=2, num_epochs=2, lr=1e-3),
        max_iterations=max_iterations, checkpoint_every=2,
    )


@pytest.fixture
def tiny():
    return tiny_config
