"""Observation groups of GraspEnv, with per-episode observation noise and bias.

Groups, N worlds, A action dim (23 joint_delta / 11 palm_synergy):
  policy        depth (N, 1, H, W) float32 m;  proprio (N, 46 + A)
  critic        (N, 112 + A) privileged state (see ``critic``)
  state_teacher (N, 64 + A): proprio + noisy object position (3) + noisy quaternion (4) + shape (11)
  student       stereo_rgb (N, 2, 3, H, W) uint8;  proprio (N, 46 + A)
Vectors are finite and clipped to +-OBS_CLIP; joint velocities are scaled by 0.1.
"""

from __future__ import annotations

import torch

from dexrl.envs.ik import quat_mul
from dexrl.sim.rng import Draws, Stream

OBS_CLIP = 10.0
VEL_SCALE = 0.1
FORCE_SCALE = 0.1


def _clean(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x, nan=0.0, posinf=OBS_CLIP, neginf=-OBS_CLIP).clamp(-OBS_CLIP, OBS_CLIP)


# Noisy quantities: (width/bias key, size). Their per-step noise is one U(-1, 1) draw of
# (N, 52) split in this order; their per-episode biases one U(0, 1) draw, likewise.
NOISY = (("q", 23), ("qd", 23), ("obj_pos", 3), ("obj_rot", 3))


class ObservationBuilder:
    """Builds every group from the env's state; holds the per-episode noise of each world.

    Noise model (per world, drawn at reset): width ~ U(0, value); bias = bias_width * (U - 0.5)
    with bias_width ~ U(0, bias value), fixed for the episode; per-step noise = width * U(-1, 1).
    Draws are keyed by the env's per-world counters (see ``dexrl.sim.rng``).
    """

    def __init__(self, env):
        self.env = env
        n, dev = env.n, env.device
        self.width = {k: torch.zeros(n, 1, device=dev) for k, _ in NOISY}
        self.bias = {k: torch.zeros(n, d, device=dev) for k, d in NOISY}
        self.descriptors = torch.as_tensor(env.scene.props.descriptor, device=dev)  # (K, 11)
        self._noise: dict[str, torch.Tensor] = {}  # this build's U(-1, 1) per key, (N, d)

    def resample_noise(self, mask: torch.Tensor, draws: Draws) -> None:
        r = self.env.cfg.randomization
        values = {"obj_pos": (r.object_pos_noise_m, r.object_pos_bias_m), "obj_rot": (r.object_rot_noise, r.object_rot_bias),
                  "q": (r.joint_pos_noise, r.joint_pos_bias), "qd": (r.joint_vel_noise, r.joint_vel_bias)}
        total = sum(d for _, d in NOISY)
        u = draws.uniform(Stream.RESET_OBS_NOISE, (2 * len(NOISY) + total,))  # (N, 8 + 52)
        at = 2 * len(NOISY)
        for i, (key, d) in enumerate(NOISY):
            noise, bias = values[key]
            w = noise * u[:, 2 * i:2 * i + 1]  # (N, 1) U(0, noise)
            bw = bias * u[:, 2 * i + 1:2 * i + 2]  # (N, 1) U(0, bias)
            b = bw * (u[:, at:at + d] - 0.5)  # (N, d)
            at += d
            self.width[key] = torch.where(mask[:, None], w, self.width[key])
            self.bias[key] = torch.where(mask[:, None], b, self.bias[key])

    def _draw_step_noise(self, draws: Draws) -> None:
        u = draws.uniform(Stream.STEP_OBS_NOISE, (sum(d for _, d in NOISY),), -1.0, 1.0)  # (N, 52)
        self._noise = dict(zip((k for k, _ in NOISY), u.split([d for _, d in NOISY], dim=-1)))

    def _noisy(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias[key] + self.width[key] * self._noise[key]

    def proprio(self) -> torch.Tensor:
        e = self.env
        q = self._noisy("q", e.joint_pos)
        qd = self._noisy("qd", e.joint_vel) * VEL_SCALE
        return _clean(torch.cat([q, qd, e.prev_action], -1))  # (N, 46 + A)

    def _velocities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Palm (N, 3) and fingertip (N, 4, 3) velocities over the last control step."""
        e = self.env
        started = (e.episode_step > 0).float()[:, None]
        palm_vel = (e.palm_pos - e.palm_pos_prev) / e.cfg.ctrl_dt * started
        tip_vel = (e.tip_pos - e.tip_pos_prev) / e.cfg.ctrl_dt * started[:, :, None]
        return palm_vel, tip_vel

    def critic(self) -> torch.Tensor:
        """True joint state (46), palm pos/quat/vel (10), fingertip pos/vel (24), object
        pos/quat/vel (13), shape (11), goal (3), fingertip forces (4), episode fraction (1),
        previous action (A): (N, 112 + A)."""
        e = self.env
        palm_vel, tip_vel = self._velocities()
        n = e.n
        frac = (e.episode_step.float() / e.cfg.max_episode_steps)[:, None]
        parts = [
            e.joint_pos, e.joint_vel * VEL_SCALE, e.palm_pos, e.palm_quat, palm_vel * VEL_SCALE,
            e.tip_pos.reshape(n, 12), tip_vel.reshape(n, 12) * VEL_SCALE, e.object_pos, e.object_quat,
            e.object_vel * VEL_SCALE, self.descriptors[e.randomizer.object_id], e.goal.expand(n, 3),
            e.tip_force * FORCE_SCALE, frac, e.prev_action,
        ]
        return _clean(torch.cat(parts, -1))

    def state_teacher(self, proprio: torch.Tensor) -> torch.Tensor:
        e = self.env
        pos = self._noisy("obj_pos", e.object_pos)
        rotvec = self.bias["obj_rot"] + self.width["obj_rot"] * self._noise["obj_rot"]  # (N, 3) rad
        angle = rotvec.norm(dim=-1)
        axis_q = torch.cat([torch.cos(angle / 2)[:, None], torch.sin(angle / 2)[:, None] * rotvec / angle.clamp_min(1e-9)[:, None]], -1)
        quat = quat_mul(axis_q, e.object_quat)
        shape = self.descriptors[e.randomizer.object_id]
        return _clean(torch.cat([proprio, pos, quat, shape], -1))

    def build(self) -> dict[str, torch.Tensor]:
        e = self.env
        draws = e.step_draws()
        self._draw_step_noise(draws)
        proprio = self.proprio()
        obs = {"proprio": proprio, "critic": self.critic(), "state_teacher": self.state_teacher(proprio)}
        if e.rig is not None and e.cfg.depth:
            obs["depth"] = e.rig.depth(draws)
        if e.rig is not None and e.cfg.stereo_rgb:
            obs["stereo_rgb"] = e.rig.stereo_rgb()
        return obs

