"""Batched damped-least-squares IK for the arm and a linear synergy map for the hand."""

from __future__ import annotations

import math

import torch

from dexrl.sim.robot import FINGER_LIMITS, THUMB_LIMITS

# palm_synergy action bounds: palm position (m) and ZYX Euler angles (rad) around the
# palm-down orientation (-135 deg, 0, 180 deg): the grasping face (+z) points at the table.
PALM_POS_LOW = (-1.2, -0.7, 0.0)
PALM_POS_HIGH = (0.0, 0.7, 1.0)
PALM_EULER_CENTER = (math.radians(-135.0), 0.0, math.radians(180.0))
PALM_EULER_HALF_RANGE = math.radians(45.0)
NUM_SYNERGIES = 5


def action_dim(action_space: str) -> int:
    """joint_delta: one target delta per joint (23); palm_synergy: palm pose (6) + synergies."""
    return 23 if action_space == "joint_delta" else 6 + NUM_SYNERGIES


def quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of wxyz quaternions, (..., 4)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def quat_conj(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)  # (not a multiply by a new tensor: a host sync on CUDA)


def quat_from_euler_zyx(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """R = Rz(yaw) Ry(pitch) Rx(roll) as wxyz, (...,) -> (..., 4)."""
    cy, sy = torch.cos(yaw / 2), torch.sin(yaw / 2)
    cp, sp = torch.cos(pitch / 2), torch.sin(pitch / 2)
    cr, sr = torch.cos(roll / 2), torch.sin(roll / 2)
    return torch.stack([
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    ], dim=-1)


def orientation_error(q_des: torch.Tensor, q_cur: torch.Tensor) -> torch.Tensor:
    """Rotation vector (small-angle) taking q_cur to q_des in the world frame, (N, 3)."""
    q_err = quat_mul(q_des, quat_conj(q_cur))  # (N, 4)
    return 2.0 * torch.where(q_err[:, :1] < 0, -q_err[:, 1:], q_err[:, 1:])


def hinge_jacobian(point: torch.Tensor, anchors: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """Geometric Jacobian of ``point`` (N, 3) w.r.t. hinge joints with world anchors/axes
    (N, J, 3): rows 0-2 linear, 3-5 angular, (N, 6, J)."""
    lin = torch.cross(axes, point[:, None] - anchors, dim=-1)  # (N, J, 3)
    return torch.cat([lin, axes], dim=-1).transpose(1, 2)


def dls_step(jac: torch.Tensor, err: torch.Tensor, damping: float = 0.05) -> torch.Tensor:
    """dq = J^T (J J^T + lambda^2 I)^-1 e, batched: (N, 6, J), (N, 6) -> (N, J)."""
    jjt = jac @ jac.transpose(1, 2)  # (N, 6, 6)
    jjt.diagonal(dim1=1, dim2=2).add_(damping**2)  # + lambda^2 I, in place
    # solve_ex: the damped matrix is positive definite, so skip solve's singularity check,
    # which would wait for the GPU on every step.
    x = torch.linalg.solve_ex(jjt, err.unsqueeze(-1))[0]  # (N, 6, 1)
    return (jac.transpose(1, 2) @ x).squeeze(-1)


def hand_limits(device) -> tuple[torch.Tensor, torch.Tensor]:
    lim = torch.tensor(FINGER_LIMITS * 3 + THUMB_LIMITS, device=device, dtype=torch.float32)  # (16, 2)
    return lim[:, 0], lim[:, 1]


def synergy_basis(device) -> torch.Tensor:
    """(16, 5) columns, in fractions of each joint's range, hand order index, middle, ring,
    thumb (4 joints each):
      0 close: flex every finger joint and curl the thumb (thumb j2, j3);
      1 oppose: swing the thumb in front of the palm (thumb j0);
      2 spread: roll index and ring (j0, about their own axes) so that, flexed, they
        splay away from the middle finger (+j0 turns index flexion toward -y);
      3 pinch: flex index and thumb distal joints only;
      4 curl: flex the distal joints of every finger (a hook grasp).
    The thumb's roll (j1) is left at 0, where its flexion curls it toward the fingers."""
    b = torch.zeros(16, NUM_SYNERGIES)
    for f in range(3):
        b[4 * f + 1:4 * f + 4, 0] = 1.0
        b[4 * f + 2:4 * f + 4, 4] = 1.0
    b[14:16, 0] = 1.0
    b[12, 1] = 1.0
    b[0, 2], b[8, 2] = 1.0, -1.0
    b[2:4, 3], b[14:16, 3] = 1.0, 1.0
    return b.to(device)


class PalmSynergyMap:
    """The palm_synergy action's map to a palm pose and hand joint targets, its constants
    made once on the env's device (none is copied from the host on a step)."""

    def __init__(self, device: torch.device | str):
        self.basis = synergy_basis(device)  # (16, 5)
        self.low, self.high = hand_limits(device)  # (16,) each
        span = self.high - self.low
        self.open_hand = self.low + 0.1 * span  # (16,) flexion at 10 % of each range...
        self.open_hand[[0, 4, 8, 13]] = 0.0  # ...and no finger or thumb roll
        self.pos_low = torch.tensor(PALM_POS_LOW, device=device)  # (3,) metres
        self.pos_span = torch.tensor(PALM_POS_HIGH, device=device) - self.pos_low  # (3,)
        self.euler_center = torch.tensor(PALM_EULER_CENTER, device=device)  # (3,) rad, ZYX

    def hand(self, s: torch.Tensor) -> torch.Tensor:
        """Synergy activations in [-1, 1] (N, 5) -> hand joint targets (N, 16): the open hand
        moved along the basis by up to 90 % of each joint's range, then clamped to the limits."""
        q = self.open_hand + (0.5 * (s + 1.0)) @ self.basis.T * (self.high - self.low) * 0.9  # (N, 16)
        return torch.minimum(torch.maximum(q, self.low), self.high)

    def pose(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The action's first 6 entries in [-1, 1] -> palm position (N, 3) and orientation
        (N, 4) wxyz."""
        pos = self.pos_low + 0.5 * (a[:, :3].clamp(-1, 1) + 1.0) * self.pos_span  # (N, 3)
        euler = self.euler_center + PALM_EULER_HALF_RANGE * a[:, 3:6].clamp(-1, 1)  # (N, 3)
        return pos, quat_from_euler_zyx(euler[:, 0], euler[:, 1], euler[:, 2])
