"""Per-world domain randomization, resampled at reset by writing per-world model fields.

Every line names its distribution: ``U(lo, hi)`` uniform per world per episode. Only the
worlds selected by the reset mask change; the others are left bit-identical.
"""

from __future__ import annotations

import math

import torch

from dexrl.config.env import CameraConfig, RandomizationConfig
from dexrl.envs.ik import quat_conj, quat_mul
from dexrl.sim.physics import BatchedPhysics
from dexrl.sim.scene import OBJECT_SPAWN


def uniform(lo: float, hi: float, shape, gen: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def random_axis_angle_quat(angle: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotations by ``angle`` (N,) about uniformly random axes, (N, 4) wxyz."""
    axis = torch.randn((angle.shape[0], 3), generator=gen, device=angle.device)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.cat([torch.cos(angle / 2)[:, None], torch.sin(angle / 2)[:, None] * axis], dim=-1)


def _put(field: torch.Tensor, mask: torch.Tensor, value: torch.Tensor, index=None) -> None:
    """field[mask, index] = value[mask] without a host sync: a where() over all worlds."""
    view = field if index is None else field[:, index]
    shape = (-1,) + (1,) * (view.dim() - 1)
    new = torch.where(mask.view(shape), value.to(view.dtype).expand_as(view), view)
    if index is None:
        field.copy_(new)
    else:
        field[:, index] = new


class Randomizer:
    """Samples and writes the physics randomization of the worlds being reset."""

    def __init__(self, physics: BatchedPhysics, gen: torch.Generator):
        self.p, self.gen = physics, gen
        s = physics.scene
        self.n, self.dev = physics.num_worlds, physics.device
        self.obj_props = {k: torch.as_tensor(v, device=self.dev) for k, v in vars(s.props).items() if k != "names"}
        self.num_objects = len(s.props.names)
        self.object_id = torch.zeros(self.n, dtype=torch.long, device=self.dev)
        self.act = torch.as_tensor(s.actuator_ids, device=self.dev)
        self.dof = torch.as_tensor(s.dof_adr, device=self.dev)
        self.robot_geoms = torch.as_tensor(s.robot_geoms, device=self.dev)
        self.cams = torch.as_tensor(sorted(s.camera_ids[c] for c in ("depth", "rgb_left", "rgb_right")), device=self.dev)

    def assign_objects(self, mask: torch.Tensor, object_id: torch.Tensor | None = None) -> None:
        """World i holds object ``object_id[i]`` (default: U{0..K-1}) from now on."""
        if object_id is None:
            object_id = torch.randint(0, self.num_objects, (self.n,), generator=self.gen, device=self.dev)
        self.object_id = torch.where(mask, object_id, self.object_id)
        s, f, pr = self.p.scene, self.p.fields, self.obj_props
        g, b = s.object_geom, s.object_body
        k = self.object_id
        _put(f["geom_dataid"], mask, pr["mesh_id"][k].to(torch.int32), g)
        for name in ("geom_pos", "geom_quat", "geom_aabb", "geom_rbound", "geom_rgba"):
            _put(f[name], mask, pr[name][k].view((self.n,) + f[name].shape[2:]), g)
        for name in ("body_inertia", "body_ipos", "body_iquat", "body_invweight0"):
            _put(f[name], mask, pr[name][k].view((self.n,) + f[name].shape[2:]), b)

    def apply(self, mask: torch.Tensor, r: RandomizationConfig) -> None:
        """Resample friction, gains, joint friction and object mass for the masked worlds."""
        f, d, n, dev, gen = self.p.fields, self.p.defaults, self.n, self.dev, self.gen
        s = self.p.scene
        fr = uniform(*r.friction, (n, 1), gen, dev)  # scale on sliding friction, U(lo, hi)
        for geoms in (self.robot_geoms, torch.tensor([s.object_geom], device=dev)):
            base = d["geom_friction"][:, geoms]  # (N, G, 3)
            _put(f["geom_friction"], mask, torch.cat([base[..., :1] * fr[..., None], base[..., 1:]], -1), geoms)
        kp = uniform(*r.kp_scale, (n, 1), gen, dev)
        kd = uniform(*r.kd_scale, (n, 1), gen, dev)
        gain, bias = d["actuator_gainprm"][:, self.act], d["actuator_biasprm"][:, self.act]  # (N, 23, 10)
        gain = torch.cat([gain[..., :1] * kp[..., None], gain[..., 1:]], -1)
        bias = torch.cat([bias[..., :1], bias[..., 1:2] * kp[..., None], bias[..., 2:3] * kd[..., None], bias[..., 3:]], -1)
        _put(f["actuator_gainprm"], mask, gain, self.act)
        _put(f["actuator_biasprm"], mask, bias, self.act)
        jf = uniform(*r.joint_friction, (n, self.dof.numel()), gen, dev).clamp_min(1e-4)  # N·m, U(lo, hi) per joint
        _put(f["dof_frictionloss"], mask, jf, self.dof)
        mass = self.obj_props["body_mass"][self.object_id] * uniform(*r.mass_scale, (n,), gen, dev)
        scale = mass / self.obj_props["body_mass"][self.object_id]
        _put(f["body_mass"], mask, mass, s.object_body)
        _put(f["body_subtreemass"], mask, mass, s.object_body)
        _put(f["body_inertia"], mask, self.obj_props["body_inertia"][self.object_id] * scale[:, None], s.object_body)
        _put(f["body_invweight0"], mask, self.obj_props["body_invweight0"][self.object_id] / scale[:, None],
             s.object_body)

    def jitter_cameras(self, mask: torch.Tensor, cam: CameraConfig) -> None:
        """Camera rig pose: position + U(-j, j) per axis, orientation by U(0, j_rot) about a
        random axis; the stereo pair and the depth camera move together."""
        f, d = self.p.fields, self.p.defaults
        dpos = uniform(-cam.jitter_pos_m, cam.jitter_pos_m, (self.n, 1, 3), self.gen, self.dev)
        angle = uniform(0.0, math.radians(cam.jitter_rot_deg), (self.n,), self.gen, self.dev)
        dq = random_axis_angle_quat(angle, self.gen)  # (N, 4)
        base_pos, base_quat = d["cam_pos"][:, self.cams], d["cam_quat"][:, self.cams]  # (N, 3, 3), (N, 3, 4)
        # Rotate the rig about the depth camera's centre so the stereo baseline stays rigid.
        centre = base_pos[:, :1]
        rel = base_pos - centre
        rel_q = torch.cat([torch.zeros_like(rel[..., :1]), rel], -1)
        dq3 = dq[:, None].expand_as(base_quat)
        rot_rel = quat_mul(quat_mul(dq3, rel_q), quat_conj(dq3))[..., 1:]
        _put(f["cam_pos"], mask, centre + rot_rel + dpos, self.cams)
        _put(f["cam_quat"], mask, quat_mul(dq3, base_quat), self.cams)

    def spawn_pose(self, r: RandomizationConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Object spawn: xy + U(-w/2, w/2), dropped from z = 0.5 m, tilted by U(0, tilt)
        about a random axis. Returns position (N, 3) and quaternion (N, 4)."""
        pos = torch.tensor(OBJECT_SPAWN, device=self.dev).repeat(self.n, 1)
        pos[:, :2] += uniform(-0.5 * r.spawn_width_m, 0.5 * r.spawn_width_m, (self.n, 2), self.gen, self.dev)
        quat = random_axis_angle_quat(uniform(0.0, r.spawn_tilt_rad, (self.n,), self.gen, self.dev), self.gen)
        return pos, quat
