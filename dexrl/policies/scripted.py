"""A scripted grasp (approach, descend, close, lift) driven by privileged object state.

It proves the physics can grasp, and gives demos and a baseline for ``dexrl eval``.
"""

from __future__ import annotations


import torch

from dexrl.envs import ik

# Phase boundaries (s since the episode started) and the palm-centre offsets (m) above the
# object for each phase.
APPROACH_END_S, DESCEND_END_S, CLOSE_END_S, LIFT_END_S = 1.2, 2.4, 3.6, 5.1
ABOVE_M, GRASP_M = 0.15, -0.045  # below the centre: the palm presses the object onto the table
LIFT_OFFSET = (0.0, 0.0, 0.03)
# Hand postures, hand order index, middle, ring (j0..j3), thumb (j0..j3), radians.
# Closing has two stages: the thumb swings in front of the palm (PRE_GRASP), then every
# finger flexes toward CLOSED_HAND, far enough past contact that the fingers keep squeezing.
# Finger j0 and thumb j1 roll a digit about its own axis: held at 0, each flexes straight
# toward the grasping face (fingers) or toward the fingers (thumb, j2 and j3).
OPEN_HAND = (0.0, 0.0, 0.0, 0.0) * 3 + (0.3, 0.0, 0.0, 0.0)
PRE_GRASP = (0.0, 0.3, 0.2, 0.1) * 3 + (1.5, 0.0, 0.1, 0.1)
CLOSED_HAND = (0.0, 1.3, 1.1, 1.0) * 3 + (1.5, 0.0, 1.0, 1.0)


class ScriptedGrasp:
    """Maps the env's state to actions in its action space (joint_delta or palm_synergy)."""

    def __init__(self, env):
        self.env = env
        dev = env.device
        self.open_hand = torch.tensor(OPEN_HAND, device=dev)
        self.pre_grasp = torch.tensor(PRE_GRASP, device=dev)
        self.closed_hand = torch.tensor(CLOSED_HAND, device=dev)
        self.palm_down = ik.quat_from_euler_zyx(*(torch.tensor(v, device=dev) for v in ik.PALM_EULER_CENTER))
        self.lift_offset = torch.tensor(LIFT_OFFSET, device=dev)

    def reset(self, done: torch.Tensor | None = None) -> None:
        """Stateless: phases come from the env's episode clock."""

    @torch.no_grad()
    def act(self, obs: dict | None = None) -> torch.Tensor:
        e = self.env
        t = e.episode_step.float()[:, None] * e.cfg.ctrl_dt  # (N, 1) s
        obj = e.object_pos  # (N, 3)
        above = obj + obj.new_tensor([0.0, 0.0, ABOVE_M])
        grasp = obj + obj.new_tensor([0.0, 0.0, GRASP_M])
        lift = e.goal + self.lift_offset
        descend_frac = ((t - APPROACH_END_S) / (DESCEND_END_S - APPROACH_END_S)).clamp(0, 1)
        palm_target = torch.where(t < APPROACH_END_S, above, above + descend_frac * (grasp - above))
        # Lift along a straight line over 1.5 s: a slow rise keeps inertial slip small.
        lift_frac = ((t - CLOSE_END_S) / (LIFT_END_S - CLOSE_END_S)).clamp(0, 1)
        if not hasattr(self, "grasp_pos"):
            self.grasp_pos = grasp.clone()
        self.grasp_pos = torch.where(t < CLOSE_END_S, grasp, self.grasp_pos)
        lifted = self.grasp_pos + lift_frac * (lift - self.grasp_pos)
        palm_target = torch.where(t >= CLOSE_END_S, lifted, palm_target)
        close_frac = ((t - DESCEND_END_S) / (CLOSE_END_S - DESCEND_END_S)).clamp(0, 1)
        first, second = (2 * close_frac).clamp(max=1), (2 * close_frac - 1).clamp(min=0)
        hand = self.open_hand + first * (self.pre_grasp - self.open_hand)  # (N, 16)
        hand = hand + second * (self.closed_hand - self.pre_grasp)
        quat = self.palm_down.expand(e.n, 4)
        if e.cfg.action_space == "palm_synergy":
            return self._palm_synergy_action(palm_target, close_frac)
        arm = e.arm_ik(palm_target, quat)  # (N, 7)
        target = torch.cat([arm, hand], -1)
        return ((target - e.targets) / e.cfg.joint_delta_scale).clamp(-1.0, 1.0)

    def _palm_synergy_action(self, palm_target: torch.Tensor, close_frac: torch.Tensor) -> torch.Tensor:
        lo, hi = palm_target.new_tensor(ik.PALM_POS_LOW), palm_target.new_tensor(ik.PALM_POS_HIGH)
        pos = 2.0 * (palm_target - lo) / (hi - lo) - 1.0
        euler = torch.zeros_like(pos)  # the centre orientation: palm facing the table
        syn = torch.full((pos.shape[0], ik.NUM_SYNERGIES), -1.0, device=pos.device)
        syn[:, 0:1] = -1.0 + 2.0 * close_frac
        syn[:, 1:2] = -1.0 + 2.0 * close_frac
        return torch.cat([pos, euler, syn], -1)


