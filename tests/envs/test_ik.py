"""The palm_synergy action space (dexrl.envs.ik): quaternion and Jacobian math against MuJoCo C,
the damped least-squares step, the synergy and palm-pose maps at hand-computed points, and
the env's IK step and action wiring. One 2-world palm_synergy env is shared by the module."""

import math

import mujoco
import numpy as np
import pytest
import torch

from dexrl.config.env import EnvConfig
from dexrl.envs import ik
from dexrl.envs.grasp import GraspEnv
from dexrl.sim.objects import ObjectSetConfig

N = 2


@pytest.fixture(scope="module")
def env():
    return GraspEnv(EnvConfig(num_envs=N, depth=False, action_space="palm_synergy",
                              objects=ObjectSetConfig(num_objects=2)))


def _set_arm(env, q_arm: torch.Tensor) -> None:
    env.physics.qpos[:, env.qpos_adr[:7]] = q_arm
    env.physics.kinematics()


def _start_arm(env) -> torch.Tensor:
    return env.q_start[:7].expand(N, 7).clone()


# ---- quaternions ----------------------------------------------------------------------------

def test_quat_from_euler_zyx_matches_mujoco_intrinsic_zyx():
    """R = Rz(yaw) Ry(pitch) Rx(roll) is MuJoCo's intrinsic "zyx" sequence with the angles
    given in the order (yaw, pitch, roll)."""
    rng = np.random.default_rng(0)
    angles = rng.uniform(-math.pi, math.pi, size=(8, 3))  # (yaw, pitch, roll) rows
    got = ik.quat_from_euler_zyx(*torch.as_tensor(angles).unbind(-1))  # (8, 4) float64
    for row, q in zip(angles, got.numpy()):
        want = np.zeros(4)
        mujoco.mju_euler2Quat(want, row, "zyx")
        np.testing.assert_allclose(q, want, atol=1e-12)
        # The same rotation as the extrinsic X, then Y, then Z sequence (roll, pitch, yaw).
        mujoco.mju_euler2Quat(want, row[::-1].copy(), "XYZ")
        np.testing.assert_allclose(q, want, atol=1e-12)
    # Not symmetric in its arguments: the order is part of the contract.
    y, p, r = torch.as_tensor(angles[0]).unbind(-1)
    assert not torch.allclose(ik.quat_from_euler_zyx(y, p, r), ik.quat_from_euler_zyx(r, p, y))


def test_quat_mul_matches_mujoco():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 5, 4))
    got = ik.quat_mul(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    for qa, qb, q in zip(a, b, got):
        want = np.zeros(4)
        mujoco.mju_mulQuat(want, qa, qb)
        np.testing.assert_allclose(q, want, atol=1e-12)


def test_orientation_error_is_a_world_frame_rotation_vector():
    # q_des = Rz(0.1) q_cur: the error is 2 * sin(0.05) = 0.0999583 about world z, whatever
    # q_cur is; with q_cur = Rx(90 deg) the body's own z is world -y, so an error expressed in
    # the body frame (conj(q_cur) q_des) would point along y instead.
    rz = torch.tensor([[math.cos(0.05), 0.0, 0.0, math.sin(0.05)]], dtype=torch.float64)
    rx90 = torch.tensor([[math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0, 0.0]], dtype=torch.float64)
    q_des = ik.quat_mul(rz, rx90)
    want = torch.tensor([[0.0, 0.0, 0.0999583]], dtype=torch.float64)
    torch.testing.assert_close(ik.orientation_error(q_des, rx90), want, atol=1e-7, rtol=0)
    # q and -q are one rotation: the error takes the short way either way.
    torch.testing.assert_close(ik.orientation_error(-q_des, rx90), want, atol=1e-7, rtol=0)


# ---- Jacobian and damped least squares --------------------------------------------------

def test_hinge_jacobian_matches_mj_jacsite(env):
    """The env's Jacobian of the palm site w.r.t. the 7 arm joints (built from MuJoCo Warp's
    joint anchors and axes, as arm_ik does) equals MuJoCo C's mj_jacSite at two random poses."""
    env.reset()
    gen = torch.Generator().manual_seed(2)
    q_arm = _start_arm(env) + (torch.rand(N, 7, generator=gen) * 2 - 1) * 0.8  # (N, 7) rad
    _set_arm(env, q_arm)
    p, s = env.physics, env.scene
    jac = ik.hinge_jacobian(env.palm_pos, p.xanchor[:, env.arm_joint_ids], p.xaxis[:, env.arm_joint_ids])
    assert jac.shape == (N, 6, 7)
    m = s.mjm
    d = mujoco.MjData(m)
    for w in range(N):
        d.qpos[:] = p.qpos[w].double().numpy()
        mujoco.mj_forward(m, d)
        jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        mujoco.mj_jacSite(m, d, jacp, jacr, s.palm_site)
        want = np.concatenate([jacp, jacr])[:, s.dof_adr[:7]]  # (6, 7)
        assert np.abs(want[:3]).max() > 0.1  # m/rad: a real lever arm, not a degenerate pose
        # float32 kinematics over a ~1.3 m chain: ~1e-7 relative; 1e-5 leaves ample margin.
        np.testing.assert_allclose(jac[w].numpy(), want, atol=1e-5)


def test_dls_step_solves_the_damped_normal_equations():
    # J (6 x 2): joint 0 moves x by 1, joint 1 moves y by 2; e = (1, 1, 0, 0, 0, 0), lambda = 0.5.
    # (J^T J + lambda^2 I) dq = J^T e:  diag(1 + 0.25, 4 + 0.25) dq = (1, 2)
    #   -> dq = (1 / 1.25, 2 / 4.25) = (0.8, 0.4705882); undamped it would be (1, 0.5).
    jac = torch.zeros(1, 6, 2, dtype=torch.float64)
    jac[0, 0, 0], jac[0, 1, 1] = 1.0, 2.0
    err = torch.tensor([[1.0, 1.0, 0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(ik.dls_step(jac, err, damping=0.5), torch.tensor([[0.8, 2 / 4.25]], dtype=torch.float64))
    # A random 6 x 7 batch with the default damping 0.05 satisfies the same equations.
    gen = torch.Generator().manual_seed(3)
    jac = torch.randn(3, 6, 7, generator=gen, dtype=torch.float64)
    err = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    dq = ik.dls_step(jac, err)
    jt = jac.transpose(1, 2)
    lhs = (jt @ jac + 0.05**2 * torch.eye(7, dtype=torch.float64)) @ dq.unsqueeze(-1)
    torch.testing.assert_close(lhs, jt @ err.unsqueeze(-1))


def test_arm_ik_reaches_a_reachable_palm_pose(env):
    """Iterating the env's one-step IK from 0.15 rad away drives the palm onto a pose the
    arm reached before: position within 0.1 mm, orientation within 1 mrad."""
    env.reset()
    gen = torch.Generator().manual_seed(4)
    q_goal = _start_arm(env) + (torch.rand(N, 7, generator=gen) * 2 - 1) * 0.3
    _set_arm(env, q_goal)
    pos, quat = env.palm_pos.clone(), env.palm_quat.clone()
    _set_arm(env, q_goal + (torch.rand(N, 7, generator=gen) * 2 - 1) * 0.15)
    assert ((env.palm_pos - pos).norm(dim=-1) > 0.02).all()  # it starts well away
    for _ in range(20):
        _set_arm(env, env.arm_ik(pos, quat))
    assert ((env.palm_pos - pos).norm(dim=-1) < 1e-4).all()
    assert (ik.orientation_error(quat, env.palm_quat).norm(dim=-1) < 1e-3).all()


# ---- action maps at hand-computed points ------------------------------------------------

# Hand joint order: index j0..j3, middle j0..j3, ring j0..j3, thumb j0..j3.
# Open hand = low + 0.1 * span, rolls (finger j0, thumb j1) at 0:
#   finger flexion  low -0.2792, span 2.0070 -> open -0.0785; + 0.45 span = 0.82465; + 0.9 span = 1.7278 (high)
#   finger j0       span 1.1170              -> 0.45 span = 0.50265 (within +-0.5585)
#   thumb j0        low 0.2792, span 1.2916  -> open 0.40836; + 0.9 span = 1.5708 (high)
#   thumb j3        low -0.2792, span 2.0420 -> open -0.0750; + 0.45 span = 0.8439; + 0.9 span = 1.7628 (high)
FO, FH, FC = -0.0785, 0.82465, 1.7278  # finger flexion: open, half, closed
OPEN = [0, FO, FO, FO] * 3 + [0.40836, 0, FO, -0.0750]


def test_synergy_hand_at_hand_computed_points():
    s = -torch.ones(7, 5)  # -1: synergy off
    s[1, 0] = 1.0  # close, fully
    s[2, 1] = 1.0  # oppose, fully
    s[3, 2] = 0.0  # spread, half
    s[4, 2] = 1.0  # spread, fully: 0.9 * 1.117 = 1.005 rad, clamped to the roll limit 0.5585
    s[5, 3] = 0.0  # pinch, half
    s[6, 4] = 0.0  # curl, half
    want = torch.tensor([
        OPEN,
        [0, FC, FC, FC] * 3 + [0.40836, 0, FC, 1.7628],
        [0, FO, FO, FO] * 3 + [1.5708, 0, FO, -0.0750],
        [0.50265, FO, FO, FO, 0, FO, FO, FO, -0.50265, FO, FO, FO, 0.40836, 0, FO, -0.0750],
        [0.5585, FO, FO, FO, 0, FO, FO, FO, -0.5585, FO, FO, FO, 0.40836, 0, FO, -0.0750],
        [0, FO, FH, FH, 0, FO, FO, FO, 0, FO, FO, FO, 0.40836, 0, FH, 0.8439],
        [0, FO, FH, FH] * 3 + [0.40836, 0, FO, -0.0750],
    ])
    got = ik.PalmSynergyMap("cpu").hand(s)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_palm_pose_at_hand_computed_points():
    a = torch.zeros(4, 6)
    a[1, :3] = -1.0  # the workspace's low corner
    a[2, :3] = 5.0  # out of range: clamped to the high corner
    a[3, 3] = 1.0  # yaw -135 + 45 = -90 deg
    pos, quat = ik.PalmSynergyMap("cpu").pose(a)
    torch.testing.assert_close(pos, torch.tensor([[-0.6, 0.0, 0.5], [-1.2, -0.7, 0.0], [0.0, 0.7, 1.0],
                                                  [-0.6, 0.0, 0.5]]))
    # Centre (yaw, pitch, roll) = (-135, 0, 180) deg: cos/sin of half angles
    #   yaw: cy = cos(-67.5) = 0.382683, sy = -0.923880; pitch: 1, 0; roll: cr = 0, sr = 1
    #   w = cr cp cy + sr sp sy = 0        x = sr cp cy - cr sp sy = 0.382683
    #   y = cr sp cy + sr cp sy = -0.923880  z = cr cp sy - sr sp cy = 0
    # Yaw -90: cy = cos(-45) = 0.707107, sy = -0.707107 -> (0, 0.707107, -0.707107, 0).
    want = torch.tensor([[0.0, 0.382683, -0.923880, 0.0]] * 3 + [[0.0, 0.707107, -0.707107, 0.0]])
    torch.testing.assert_close(quat, want, atol=1e-6, rtol=0)
    # The centre orientation turns the palm's grasping face (+z) onto world -z: at the table.
    face = np.zeros(3)
    mujoco.mju_rotVecQuat(face, np.array([0.0, 0.0, 1.0]), quat[0].double().numpy())
    np.testing.assert_allclose(face, [0.0, 0.0, -1.0], atol=1e-6)


def test_palm_action_euler_order():
    """Entries 3, 4, 5 add +-45 deg to yaw, pitch and roll respectively (MuJoCo's "zyx")."""
    gen = torch.Generator().manual_seed(5)
    a = torch.rand(6, 6, generator=gen) * 2 - 1
    _, quat = ik.PalmSynergyMap("cpu").pose(a)
    for row, q in zip(a, quat):
        euler = np.radians([-135.0, 0.0, 180.0]) + math.radians(45.0) * row[3:].double().numpy()
        want = np.zeros(4)
        mujoco.mju_euler2Quat(want, euler, "zyx")
        np.testing.assert_allclose(q.numpy(), want, atol=1e-6)


def test_palm_synergy_step_sets_hand_targets_from_the_last_five_entries(env):
    env.reset()
    a = torch.zeros(N, 11)
    a[:, 6:] = -1.0  # every synergy off: the open hand
    a[1, 6] = 1.0  # world 1 closes
    env.step(a)
    want = torch.tensor([OPEN, [0, FC, FC, FC] * 3 + [0.40836, 0, FC, 1.7628]])
    torch.testing.assert_close(env.targets[:, 7:], want, atol=2e-5, rtol=0)
    torch.testing.assert_close(env.physics.ctrl[:, env.act_ids[7:]], want, atol=2e-5, rtol=0)
