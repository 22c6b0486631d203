"""Batched MuJoCo Warp physics with zero-copy torch views of the state and per-world fields."""

from __future__ import annotations

import logging

import mujoco
import mujoco_warp as mjw
import torch
import warp as wp

from dexrl.sim.scene import Scene

wp.config.quiet = True
wp.config.log_level = logging.WARNING  # Warp logs a line per compiled module otherwise

# Model fields that differ per world: the object slot (mesh, frame, inertia, colour) and the
# randomized physics (friction, gains, joint friction, camera pose).
PER_WORLD_FIELDS = (
    "geom_dataid", "geom_pos", "geom_quat", "geom_aabb", "geom_rbound", "geom_rgba", "geom_friction",
    "body_mass", "body_inertia", "body_ipos", "body_iquat", "body_invweight0", "body_subtreemass",
    "actuator_gainprm", "actuator_biasprm", "dof_frictionloss", "cam_pos", "cam_quat",
)


# Overflows that drop contacts or constraints (not the solver's iteration caps): a buffer
# sized by nconmax / njmax / naccdmax was too small in that world.
BUFFER_OVERFLOW = int(mjw.OverflowType.NEFC | mjw.OverflowType.NJMAX_NNZ | mjw.OverflowType.BROADPHASE
                      | mjw.OverflowType.NARROWPHASE | mjw.OverflowType.CCD | mjw.OverflowType.EPA_HORIZON)


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def warp_device(device: str | torch.device) -> wp.context.Device:
    name = str(device)
    if name.startswith("cuda"):
        if not torch.cuda.is_available() or wp.get_cuda_device_count() == 0:
            raise DeviceError(f"device {name!r} was requested but no CUDA device is available; use --device cpu")
        name = name if ":" in name else f"cuda:{torch.cuda.current_device()}"  # as torch reads "cuda"
    elif name != "cpu":
        raise DeviceError(f"unknown device {name!r}; use 'cpu' or 'cuda[:index]'")
    return wp.get_device(name)


class BatchedPhysics:
    """N worlds of one scene on one device.

    Tensors returned by the properties are views of MuJoCo Warp's arrays: writing them
    writes the simulation state, with no copy.
    """

    def __init__(self, scene: Scene, num_worlds: int, device: str = "cpu", nconmax_per_world: int = 48,
                 njmax_per_world: int = 160, naccdmax_per_world: int | None = None, graph: bool = True):
        self.scene, self.num_worlds = scene, num_worlds
        self.wp_device = warp_device(device)
        self.device = torch.device(wp.device_to_torch(self.wp_device))
        mjm = scene.mjm
        with wp.ScopedDevice(self.wp_device):
            self.model = mjw.put_model(mjm, batch_sizes={f: num_worlds for f in PER_WORLD_FIELDS})
            mjd = mujoco.MjData(mjm)
            mujoco.mj_forward(mjm, mjd)
            naccdmax = None if naccdmax_per_world is None else naccdmax_per_world * num_worlds
            self.data = mjw.put_data(mjm, mjd, nworld=num_worlds, nconmax=nconmax_per_world,  # per world
                                     njmax=njmax_per_world, naccdmax=naccdmax)
        # Hitting the line-search cap is benign (the step still improves); don't print it.
        self.model.opt.warn_overflow &= ~int(mjw.OverflowType.LS_ITERATIONS)
        # A physics substep as a Warp graph, recorded on the first step and replayed: on CUDA a
        # CUDA graph; on the CPU Warp's recorded launches, free of Python's launch overhead
        # (physics 13x faster at 8 worlds, 1.6x at 64; docs/results.md).
        self._use_graph, self._graph = graph, None
        m, d = self.model, self.data
        t = wp.to_torch
        # State views, (N, ...) each.
        self.qpos, self.qvel, self.ctrl = t(d.qpos), t(d.qvel), t(d.ctrl)
        self.xfrc_applied = t(d.xfrc_applied)  # (N, nbody, 6) force (N) then torque (N·m), as MuJoCo
        self.xpos, self.xquat = t(d.xpos), t(d.xquat)  # (N, nbody, 3), (N, nbody, 4)
        self.site_xpos = t(d.site_xpos)  # (N, nsite, 3)
        self.xanchor, self.xaxis = t(d.xanchor), t(d.xaxis)  # (N, njnt, 3)
        self.sensordata = t(d.sensordata)  # (N, nsensordata)
        self.fields = {name: t(getattr(m, name)) for name in PER_WORLD_FIELDS}
        self.defaults = {name: v.clone() for name, v in self.fields.items()}
        self.qacc_warmstart = t(d.qacc_warmstart)  # (N, nv)
        self._overflow = t(d.overflow)  # (N,) int32 OverflowType bits, sticky until cleared
        self.qpos0 = torch.as_tensor(mjm.qpos0, device=self.device, dtype=self.qpos.dtype)  # (nq,)

    def _substep(self) -> None:
        """One physics step. The graph holds one substep, launched once for each: a graph keeps
        the scratch of every step it records (164 KiB a world at 160x120 with one, 257 with
        two; docs/results.md), at the same speed."""
        if self._graph is not None:
            wp.capture_launch(self._graph)
            return
        # Eagerly the first time, so kernel builds and lazy buffers happen outside the
        # capture; capturing then records the same launches and runs nothing.
        mjw.step(self.model, self.data)
        if self._use_graph:
            with wp.ScopedCapture() as capture:
                mjw.step(self.model, self.data)
            self._graph = capture.graph

    def step(self, substeps: int) -> None:
        """Advance every world by ``substeps`` physics steps, then bring positions and cameras
        up to date (MuJoCo's derived fields otherwise lag the state by one substep)."""
        with wp.ScopedDevice(self.wp_device):
            for _ in range(substeps):
                self._substep()
            self.kinematics()

    def take_overflow(self) -> torch.Tensor:
        """(N,) bool: worlds whose contact or constraint buffers overflowed since the last
        call (MuJoCo Warp dropped contacts there); clears the flags."""
        hit = (self._overflow & BUFFER_OVERFLOW) != 0
        self._overflow.zero_()
        return hit

    def kinematics(self) -> None:
        with wp.ScopedDevice(self.wp_device):
            mjw.kinematics(self.model, self.data)
            mjw.camlight(self.model, self.data)

    def reset_where(self, mask: torch.Tensor) -> None:
        """Clear the dynamic state of the worlds where ``mask`` (N,) is True: positions to the
        model's qpos0, velocities, solver warm start, applied forces and sensor readings (the
        fingertips' touch, which only a physics step recomputes) to zero. Pure torch
        writes over all worlds (no host synchronization, a handful of kernels); the caller
        then writes the new episode's state."""
        m = mask[:, None]
        zero = torch.zeros((), device=self.device)
        self.qpos.copy_(torch.where(m, self.qpos0, self.qpos))
        for x in (self.qvel, self.qacc_warmstart, self.ctrl, self.sensordata):
            x.copy_(torch.where(m, zero, x))
        self.xfrc_applied.copy_(torch.where(m[:, :, None], zero, self.xfrc_applied))
