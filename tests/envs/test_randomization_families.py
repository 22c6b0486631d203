"""Each randomization family the ADR widens actually lands in the worlds."""

from dataclasses import replace

import pytest
import torch

from dexrl.config.env import CameraConfig, EnvConfig, RandomizationConfig, RewardConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.sim.robot import START_QPOS
from dexrl.sim.scene import OBJECT_SPAWN

N = 8


@pytest.fixture(scope="module")
def env():
    return GraspEnv(EnvConfig(num_envs=N, depth=False, camera=CameraConfig(width=16, height=12)))


def _reset(env, **ranges):
    env.set_randomization(replace(RandomizationConfig(), **ranges), RewardConfig())
    return env.reset()


def test_spawn_width_and_tilt(env):
    _reset(env, spawn_width_m=(0.4, 0.2), spawn_tilt_rad=3.0)
    xy = env.object_pos[:, :2] - torch.tensor(OBJECT_SPAWN[:2])  # (N, 2): x U(-0.2, 0.2), y U(-0.1, 0.1)
    assert xy[:, 0].abs().max() <= 0.2 + 1e-6 and xy[:, 1].abs().max() <= 0.1 + 1e-6 and xy[:, 0].std() > 0.02
    angle = 2 * torch.acos(env.object_quat[:, 0].abs().clamp(max=1))  # (N,) U(0, 3)
    assert angle.max() <= 3.0 + 1e-4 and angle.min() > 0.0
    _reset(env)  # width 0, tilt 0: exactly the spawn point, upright
    assert torch.allclose(env.object_pos[:, :2], torch.tensor(OBJECT_SPAWN[:2]).expand(N, 2))
    assert torch.allclose(env.object_quat, torch.tensor([1.0, 0, 0, 0]).expand(N, 4))


def test_reset_joint_noise(env):
    _reset(env, reset_joint_pos_noise=0.3, reset_joint_vel_noise=1.0)
    dq = env.joint_pos - torch.as_tensor(START_QPOS, dtype=torch.float32).clamp(env.q_low, env.q_high)
    assert dq.abs().max() <= 0.3 + 1e-5 and dq.abs().max() > 0.1  # U(-0.3, 0.3) per joint
    assert 0.1 < env.joint_vel.abs().max() <= 1.0 + 1e-5


def test_observation_noise_and_bias(env):
    obs = _reset(env, joint_pos_noise=0.05, joint_pos_bias=0.04)
    err = obs["proprio"][:, :23] - env.joint_pos  # (N, 23): bias + per-step noise
    # width <= 0.05 noise + |bias| <= 0.04 / 2: the error stays within 0.07 and is nonzero.
    assert err.abs().max() <= 0.05 + 0.02 + 1e-5 and err.abs().max() > 1e-3
    obs = _reset(env)
    assert torch.equal(obs["proprio"][:, :23], env.joint_pos)


def test_object_pose_noise_reaches_the_state_teacher(env):
    obs = _reset(env, object_pos_noise_m=0.03, object_pos_bias_m=0.02)
    p = 46 + env.action_dim  # state_teacher = proprio, object position (3), quaternion (4), shape
    err = obs["state_teacher"][:, p:p + 3] - env.object_pos
    assert err.abs().max() <= 0.03 + 0.01 + 1e-5 and err.abs().max() > 1e-3


def test_disturbance_pushes_the_object_near_the_hand(env):
    _reset(env, disturbance_accel=10.0)
    a = env.scene.object_qpos_adr
    env.physics.qpos[:, a:a + 3] = env.palm_pos + torch.tensor([0.0, 0.0, -0.1])  # within 0.3 m
    env.physics.kinematics()
    env.step(torch.zeros(N, env.action_dim))
    force = env.physics.xfrc_applied[:, env.scene.object_body, :3]  # (N, 3)
    mass = env.physics.fields["body_mass"][:, env.scene.object_body]
    # |F| = mass * U(0, 10) m/s^2
    assert (force.norm(dim=-1) <= mass * 10.0 + 1e-4).all() and (force.norm(dim=-1) > 0).all()
    # A bound lowered to 0 mid-episode (e.g. eval setting ranges) removes the force at once.
    env.set_randomization(RandomizationConfig(), RewardConfig())
    env.step(torch.zeros(N, env.action_dim))
    assert not env.physics.xfrc_applied.any()


def test_reward_weights_follow_the_schedule(env):
    env.reset()
    env.set_randomization(RandomizationConfig(), RewardConfig(lift_weight=0.0, object_to_goal_sharpness=-20.0))
    res = env.step(torch.zeros(N, env.action_dim))
    assert torch.equal(res.info["reward_terms"]["lift"], torch.zeros(N))
    d = (env.object_pos - env.goal).norm(dim=-1)
    assert torch.allclose(res.info["reward_terms"]["object_to_goal"], 5.0 * torch.exp(-20.0 * d))
