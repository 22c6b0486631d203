"""Per-world domain randomization, resampled at reset by writing per-world model fields.

Every line names its distribution: ``U(lo, hi)`` uniform per world per episode. Only the
worlds selected by the reset mask change; the others are left bit-identical. Draws come from
the env's counter-based ``WorldRNG`` keyed by each world's episode counter, one stream per
draw site, so they do not depend on the batch a world is simulated in.
"""

from __future__ import annotations

import math

import torch

from dexrl.config.env import CameraConfig, RandomizationConfig
from dexrl.envs.ik import quat_conj, quat_mul
from dexrl.sim.rng import Draws, Stream
from dexrl.sim.physics import BatchedPhysics
from dexrl.sim.robot import JOINT_FRICTION_UNIT_NM
from dexrl.sim.scene import OBJECT_SPAWN


def axis_angle_quat(angle: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Rotations by ``angle`` (N,) about ``axis`` (N, 3) (any length; normalized here
    as the direction of a N(0, I3) sample: a uniformly random axis), (N, 4) wxyz."""
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

    def __init__(self, physics: BatchedPhysics):
        self.p = physics
        s = physics.scene
        self.n, self.dev = physics.num_worlds, physics.device
        self.obj_props = {k: torch.as_tensor(v, device=self.dev) for k, v in vars(s.props).items() if k != "names"}
        self.num_objects = len(s.props.names)
        self.object_id = torch.zeros(self.n, dtype=torch.long, device=self.dev)
        self.act = torch.as_tensor(s.actuator_ids, device=self.dev)
        self.dof = torch.as_tensor(s.dof_adr, device=self.dev)
        self.friction_unit = torch.tensor(JOINT_FRICTION_UNIT_NM, device=self.dev)  # (23,) N·m
        self.robot_geoms = torch.as_tensor(s.robot_geoms, device=self.dev)
        # Device constants made once: a tensor built from a Python list on CUDA costs a host
        # sync, and these are read on every step's (masked) reset.
        self.object_geoms = torch.tensor([s.object_geom], device=self.dev)
        self.spawn_point = torch.tensor(OBJECT_SPAWN, device=self.dev)  # (3,) m
        self.cams = torch.as_tensor(sorted(s.camera_ids[c] for c in ("depth", "rgb_left", "rgb_right")), device=self.dev)

    def assign_objects(self, mask: torch.Tensor, draws: Draws, object_id: torch.Tensor | None = None) -> None:
        """World i holds object ``object_id[i]`` (default: U{0..K-1}) from now on."""
        if object_id is None:
            object_id = draws.randint(Stream.RESET_OBJECT, (), self.num_objects)  # (N,)
        self.object_id = torch.where(mask, object_id, self.object_id)
        s, f, pr = self.p.scene, self.p.fields, self.obj_props
        g, b = s.object_geom, s.object_body
        k = self.object_id
        _put(f["geom_dataid"], mask, pr["mesh_id"][k].to(torch.int32), g)
        for name in ("geom_pos", "geom_quat", "geom_aabb", "geom_rbound", "geom_rgba"):
            _put(f[name], mask, pr[name][k].view((self.n,) + f[name].shape[2:]), g)
        for name in ("body_inertia", "body_ipos", "body_iquat", "body_invweight0"):
            _put(f[name], mask, pr[name][k].view((self.n,) + f[name].shape[2:]), b)

    def apply(self, mask: torch.Tensor, r: RandomizationConfig, draws: Draws) -> None:
        """Resample friction, gains, joint friction and object mass for the masked worlds."""
        f, d = self.p.fields, self.p.defaults
        s = self.p.scene
        fr = draws.uniform(Stream.RESET_FRICTION, (1,), *r.friction)  # (N, 1) scale on sliding friction, U(lo, hi)
        for geoms in (self.robot_geoms, self.object_geoms):
            base = d["geom_friction"][:, geoms]  # (N, G, 3)
            _put(f["geom_friction"], mask, torch.cat([base[..., :1] * fr[..., None], base[..., 1:]], -1), geoms)
        u = draws.uniform(Stream.RESET_GAINS, (2,))  # (N, 2)
        kp = r.kp_scale[0] + (r.kp_scale[1] - r.kp_scale[0]) * u[:, :1]  # (N, 1) U(lo, hi)
        kd = r.kd_scale[0] + (r.kd_scale[1] - r.kd_scale[0]) * u[:, 1:]  # (N, 1) U(lo, hi)
        gain, bias = d["actuator_gainprm"][:, self.act], d["actuator_biasprm"][:, self.act]  # (N, 23, 10)
        gain = torch.cat([gain[..., :1] * kp[..., None], gain[..., 1:]], -1)
        bias = torch.cat([bias[..., :1], bias[..., 1:2] * kp[..., None], bias[..., 2:3] * kd[..., None], bias[..., 3:]], -1)
        _put(f["actuator_gainprm"], mask, gain, self.act)
        _put(f["actuator_biasprm"], mask, bias, self.act)
        jf = draws.uniform(Stream.RESET_JOINT_FRICTION, (self.dof.numel(),), *r.joint_friction_scale)
        jf = (jf * self.friction_unit).clamp_min(1e-4)  # (N, 23) N·m: U(lo, hi) per joint x its unit
        _put(f["dof_frictionloss"], mask, jf, self.dof)
        mass = self.obj_props["body_mass"][self.object_id] * draws.uniform(Stream.RESET_MASS, (), *r.mass_scale)
        scale = mass / self.obj_props["body_mass"][self.object_id]
        _put(f["body_mass"], mask, mass, s.object_body)
        _put(f["body_subtreemass"], mask, mass, s.object_body)
        _put(f["body_inertia"], mask, self.obj_props["body_inertia"][self.object_id] * scale[:, None], s.object_body)
        _put(f["body_invweight0"], mask, self.obj_props["body_invweight0"][self.object_id] / scale[:, None],
             s.object_body)

    def jitter_cameras(self, mask: torch.Tensor, cam: CameraConfig, draws: Draws) -> None:
        """Camera rig pose: position + U(-j, j) per axis, orientation by U(0, j_rot) about a
        random axis; the stereo pair and the depth camera move together."""
        f, d = self.p.fields, self.p.defaults
        dpos = draws.uniform(Stream.RESET_CAMERA_POS, (1, 3), -cam.jitter_pos_m, cam.jitter_pos_m)  # (N, 1, 3)
        angle = draws.uniform(Stream.RESET_CAMERA_ANGLE, (), 0.0, math.radians(cam.jitter_rot_deg))  # (N,)
        dq = axis_angle_quat(angle, draws.normal(Stream.RESET_CAMERA_AXIS, (3,)))  # (N, 4)
        base_pos, base_quat = d["cam_pos"][:, self.cams], d["cam_quat"][:, self.cams]  # (N, 3, 3), (N, 3, 4)
        # Rotate the rig about the depth camera's centre so the stereo baseline stays rigid.
        centre = base_pos[:, :1]
        rel = base_pos - centre
        rel_q = torch.cat([torch.zeros_like(rel[..., :1]), rel], -1)
        dq3 = dq[:, None].expand_as(base_quat)
        rot_rel = quat_mul(quat_mul(dq3, rel_q), quat_conj(dq3))[..., 1:]
        _put(f["cam_pos"], mask, centre + rot_rel + dpos, self.cams)
        _put(f["cam_quat"], mask, quat_mul(dq3, base_quat), self.cams)

    def spawn_pose(self, r: RandomizationConfig, draws: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """Object spawn: x + U(-wx/2, wx/2), y + U(-wy/2, wy/2), dropped from z = 0.5 m, tilted
        by U(0, tilt) about a random axis. Returns position (N, 3) and quaternion (N, 4)."""
        pos = self.spawn_point.repeat(self.n, 1)  # (N, 3) m
        xy = 2.0 * draws.uniform(Stream.RESET_SPAWN_XY, (2,)) - 1.0  # (N, 2) in [-1, 1]
        for i, width in enumerate(r.spawn_width_m):  # Python floats: no host-to-device copy
            pos[:, i] += xy[:, i] * (0.5 * width)
        angle = draws.uniform(Stream.RESET_SPAWN_ANGLE, (), 0.0, r.spawn_tilt_rad)  # (N,) rad
        quat = axis_angle_quat(angle, draws.normal(Stream.RESET_SPAWN_AXIS, (3,)))  # (N, 4)
        return pos, quat
