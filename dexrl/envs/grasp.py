"""GraspEnv: N batched worlds of the iiwa + Allegro grasp-and-lift task, torch in and out."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from dexrl.config.env import EnvConfig
from dexrl.envs import ik
from dexrl.envs.observations import ObservationBuilder
from dexrl.envs.randomization import Randomizer
from dexrl.envs.rewards import RewardState, compute_rewards
from dexrl.sim.rng import Draws, Stream, WorldRNG
from dexrl.sim.cameras import CameraRig
from dexrl.sim.physics import BatchedPhysics
from dexrl.sim.robot import START_HAND, START_QPOS
from dexrl.sim.scene import GOAL, build_scene

SUCCESS_RADIUS_M = 0.10
EPISODE_SUCCESS_HOLD_S = 2.0
# The object must stay inside this box, else the episode terminates.
WORKSPACE_X, WORKSPACE_Y, MIN_OBJECT_Z = (-0.8, -0.3), (-0.3, 0.5), 0.2
DISTURB_RADIUS_M = 0.3


class ActionError(ValueError):
    """An action tensor of the wrong shape or with non-finite values."""


@dataclass
class StepResult:
    obs: dict[str, torch.Tensor]
    reward: torch.Tensor  # (N,)
    terminated: torch.Tensor  # (N,) bool: a terminal state (object lost or physics failed)
    truncated: torch.Tensor  # (N,) bool: time limit reached
    info: dict


class GraspEnv:
    """Grasp an object from the table and lift it to the goal.

    ``step`` auto-resets finished worlds: the returned observation of such a world is the
    first of its new episode; ``info["final_critic"]`` holds the critic observation of the
    state it ended in (for bootstrapping truncated episodes).

    Randomness is counter-based (``dexrl.sim.rng``): world i of this env is global world
    ``cfg.world_offset + i``; reset draws are keyed by its episode counter, step draws by
    (episode counter, step in episode). A world's trajectory therefore depends only on the
    seed, its global id and its actions, not on the other worlds in the batch.
    """

    def __init__(self, cfg: EnvConfig, third_person: bool = False):
        self.cfg = cfg
        self.scene = build_scene(cfg)
        self.physics = BatchedPhysics(self.scene, cfg.num_envs, cfg.device, cfg.nconmax_per_world,
                                      cfg.njmax_per_world, cfg.naccdmax_per_world)
        p = self.physics
        self.n, self.device = cfg.num_envs, p.device
        world_ids = torch.arange(cfg.world_offset, cfg.world_offset + cfg.num_envs, device=self.device)  # (N,)
        self.rng = WorldRNG(cfg.seed, world_ids)
        self.rig = None
        if cfg.depth or cfg.stereo_rgb or third_person:
            self.rig = CameraRig(p, cfg.camera, depth=cfg.depth, stereo_rgb=cfg.stereo_rgb, third_person=third_person)
        self.randomizer = Randomizer(p)
        dev, s = self.device, self.scene
        self.qpos_adr = torch.as_tensor(s.qpos_adr, device=dev)
        self.dof_adr = torch.as_tensor(s.dof_adr, device=dev)
        self.act_ids = torch.as_tensor(s.actuator_ids, device=dev)
        self.arm_joint_ids = torch.as_tensor(s.joint_ids[:7], device=dev)
        self.tip_sites = torch.as_tensor(s.tip_sites, device=dev)
        self.tip_force_adr = torch.as_tensor(s.tip_force_adr, device=dev)
        self.q_low = torch.as_tensor(s.jnt_range[:, 0], device=dev, dtype=torch.float32)
        self.q_high = torch.as_tensor(s.jnt_range[:, 1], device=dev, dtype=torch.float32)
        self.q_start = torch.as_tensor(START_QPOS, device=dev, dtype=torch.float32).clamp(self.q_low, self.q_high)
        self.curl_q = torch.as_tensor(START_HAND, device=dev, dtype=torch.float32)
        self.goal = torch.tensor(GOAL, device=dev)
        self.action_dim = ik.action_dim(cfg.action_space)
        self.palm_synergy = ik.PalmSynergyMap(dev)
        n = self.n
        self.targets = self.q_start.repeat(n, 1)  # (N, 23) joint position targets
        self.prev_action = torch.zeros(n, self.action_dim, device=dev)
        self.episode_step = torch.zeros(n, dtype=torch.long, device=dev)
        self.episode_count = torch.zeros(n, dtype=torch.long, device=dev)  # resets of each world so far
        self.episode_return = torch.zeros(n, device=dev)
        self.success_steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.disturb_force = torch.zeros(n, 3, device=dev)
        self.nonfinite_resets = torch.zeros((), dtype=torch.long, device=dev)
        self.obs_builder = ObservationBuilder(self)
        self.palm_pos_prev = torch.zeros(n, 3, device=dev)
        self.tip_pos_prev = torch.zeros(n, 4, 3, device=dev)

    # ---- state accessors, (N, ...) views computed on demand ---------------------------------
    @property
    def joint_pos(self) -> torch.Tensor:
        return self.physics.qpos[:, self.qpos_adr]  # (N, 23) rad

    @property
    def joint_vel(self) -> torch.Tensor:
        return self.physics.qvel[:, self.dof_adr]  # (N, 23) rad/s

    @property
    def object_pos(self) -> torch.Tensor:
        a = self.scene.object_qpos_adr
        return self.physics.qpos[:, a:a + 3]  # (N, 3) m

    @property
    def object_quat(self) -> torch.Tensor:
        a = self.scene.object_qpos_adr
        return self.physics.qpos[:, a + 3:a + 7]  # (N, 4) wxyz

    @property
    def object_vel(self) -> torch.Tensor:
        a = self.scene.object_dof_adr
        return self.physics.qvel[:, a:a + 6]  # (N, 6) linear (world), angular (local)

    @property
    def palm_pos(self) -> torch.Tensor:
        return self.physics.site_xpos[:, self.scene.palm_site]  # (N, 3) m

    @property
    def palm_quat(self) -> torch.Tensor:
        return self.physics.xquat[:, self.scene.palm_body]  # (N, 4)

    @property
    def tip_pos(self) -> torch.Tensor:
        return self.physics.site_xpos[:, self.tip_sites]  # (N, 4, 3) m

    @property
    def tip_force(self) -> torch.Tensor:
        return self.physics.sensordata[:, self.tip_force_adr]  # (N, 4) N, contact normal force per fingertip

    def step_draws(self) -> Draws:
        """Step-time draws, keyed by (episode counter, step in episode) of each world."""
        return self.rng.at((self.episode_count, self.episode_step))

    @property
    def in_success_region(self) -> torch.Tensor:
        return (self.object_pos - self.goal).norm(dim=-1) < SUCCESS_RADIUS_M  # (N,) bool

    # ---- reset ----------------------------------------------------------------------------
    def reset(self, env_ids: torch.Tensor | None = None, object_ids: torch.Tensor | None = None) -> dict:
        """Reset the worlds ``env_ids`` (all if None); returns the observation of every world."""
        mask = torch.ones(self.n, dtype=torch.bool, device=self.device)
        if env_ids is not None:
            mask = torch.zeros_like(mask)
            mask[torch.as_tensor(env_ids, device=self.device)] = True
        if object_ids is not None:
            object_ids = torch.as_tensor(object_ids, device=self.device)  # (N,) long
        self._reset_where(mask, object_ids)
        self.physics.kinematics()
        # Only the reset worlds start over: the others keep their last step's velocities.
        self.palm_pos_prev.copy_(torch.where(mask[:, None], self.palm_pos, self.palm_pos_prev))
        self.tip_pos_prev.copy_(torch.where(mask[:, None, None], self.tip_pos, self.tip_pos_prev))
        self._render()
        return self.obs_builder.build()

    def _reset_where(self, mask: torch.Tensor, object_ids: torch.Tensor | None = None) -> None:
        r, p, rnd, dev = self.cfg.randomization, self.physics, self.randomizer, self.device
        self.episode_count = torch.where(mask, self.episode_count + 1, self.episode_count)
        draws = self.rng.at(self.episode_count)  # every reset draw is keyed by the new episode's number
        p.reset_where(mask)
        rnd.assign_objects(mask, draws, object_ids)
        rnd.apply(mask, r, draws)
        rnd.jitter_cameras(mask, self.cfg.camera, draws)
        q = self.q_start + draws.uniform(Stream.RESET_JOINT_POS, (23,), -1.0, 1.0) * r.reset_joint_pos_noise
        q = q.clamp(self.q_low, self.q_high)  # (N, 23) rad
        qd = draws.uniform(Stream.RESET_JOINT_VEL, (23,), -1.0, 1.0) * r.reset_joint_vel_noise  # (N, 23) rad/s
        pos, quat = rnd.spawn_pose(r, draws)
        m = mask[:, None]
        p.qpos[:, self.qpos_adr] = torch.where(m, q, p.qpos[:, self.qpos_adr])
        p.qvel[:, self.dof_adr] = torch.where(m, qd, p.qvel[:, self.dof_adr])  # object's stays 0
        a = self.scene.object_qpos_adr
        p.qpos[:, a:a + 7] = torch.where(m, torch.cat([pos, quat], -1), p.qpos[:, a:a + 7])
        self.targets = torch.where(m, q, self.targets)
        p.ctrl[:, self.act_ids] = self.targets
        zero = torch.zeros((), device=dev)
        self.prev_action = torch.where(m, zero, self.prev_action)
        self.episode_step = torch.where(mask, 0, self.episode_step)
        self.episode_return = torch.where(mask, zero, self.episode_return)
        self.success_steps = torch.where(mask, 0, self.success_steps)
        self.disturb_force = torch.where(m, zero, self.disturb_force)
        self.obs_builder.resample_noise(mask, draws)

    # ---- step -----------------------------------------------------------------------------
    def _check_action(self, action: torch.Tensor) -> torch.Tensor:
        if not isinstance(action, torch.Tensor) or action.shape != (self.n, self.action_dim):
            shape = tuple(action.shape) if isinstance(action, torch.Tensor) else type(action).__name__
            raise ActionError(f"action must be a tensor of shape ({self.n}, {self.action_dim}) for "
                              f"action_space={self.cfg.action_space!r}, got {shape}")
        action = action.to(self.device, torch.float32)
        if not torch.isfinite(action).all():
            raise ActionError("action contains NaN or Inf; check the policy's outputs")
        return action.clamp(-1.0, 1.0)

    def _targets_from_action(self, a: torch.Tensor) -> torch.Tensor:
        """(N, A) in [-1, 1] -> joint targets (N, 23)."""
        if self.cfg.action_space == "joint_delta":
            return (self.targets + self.cfg.joint_delta_scale * a).clamp(self.q_low, self.q_high)
        pos, quat = self.palm_synergy.pose(a)
        arm = self.arm_ik(pos, quat)
        hand = self.palm_synergy.hand(a[:, 6:])
        return torch.cat([arm, hand], -1).clamp(self.q_low, self.q_high)

    def arm_ik(self, palm_pos: torch.Tensor, palm_quat: torch.Tensor, max_step: float = 0.25) -> torch.Tensor:
        """One damped-least-squares step from the current arm pose toward a palm pose:
        arm joint targets (N, 7)."""
        p, arm_j = self.physics, self.arm_joint_ids
        jac = ik.hinge_jacobian(self.palm_pos, p.xanchor[:, arm_j], p.xaxis[:, arm_j])  # (N, 6, 7)
        err = torch.cat([palm_pos - self.palm_pos, ik.orientation_error(palm_quat, self.palm_quat)], -1)
        dq = ik.dls_step(jac, err).clamp(-max_step, max_step)  # (N, 7)
        return self.joint_pos[:, :7] + dq

    def _disturb(self) -> None:
        """Force = mass * U(0, a) in a random direction, resampled each second, applied only
        while the palm is within 0.3 m of the object."""
        a = self.cfg.randomization.disturbance_accel
        p, b = self.physics, self.scene.object_body
        if a <= 0:
            return
        every = max(int(round(1.0 / self.cfg.ctrl_dt)), 1)
        resample = (self.episode_step % every == 0)[:, None]
        draws = self.step_draws()
        direction = draws.normal(Stream.STEP_DISTURB_DIR, (3,))  # (N, 3)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        mag = draws.uniform(Stream.STEP_DISTURB_MAG, (1,), 0.0, a) * p.fields["body_mass"][:, b, None]  # (N, 1) N
        self.disturb_force = torch.where(resample, direction * mag, self.disturb_force)
        near = ((self.palm_pos - self.object_pos).norm(dim=-1) < DISTURB_RADIUS_M)[:, None]
        p.xfrc_applied[:, b, :3] = torch.where(near, self.disturb_force, torch.zeros_like(self.disturb_force))

    def step(self, action: torch.Tensor) -> StepResult:
        a = self._check_action(action)  # (N, A)
        p = self.physics
        self.targets = self._targets_from_action(a)
        p.ctrl[:, self.act_ids] = self.targets
        self._disturb()
        self.palm_pos_prev.copy_(self.palm_pos)
        self.tip_pos_prev.copy_(self.tip_pos)
        p.step(self.cfg.decimation)
        overflow = p.take_overflow()  # (N,)
        self.prev_action = a
        self.episode_step += 1

        nonfinite = ~(torch.isfinite(p.qpos).all(-1) & torch.isfinite(p.qvel).all(-1))  # (N,)
        terms = compute_rewards(RewardState(
            palm_pos=self.palm_pos, tip_pos=self.tip_pos, object_pos=self.object_pos, goal=self.goal,
            finger_q=self.joint_pos[:, 7:], curl_q=self.curl_q), self.cfg.reward)
        terms = {k: torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) * ~nonfinite for k, v in terms.items()}
        reward = sum(terms.values())
        success = self.in_success_region & ~nonfinite
        self.success_steps = torch.where(success, self.success_steps + 1, 0)
        hold_steps = int(round(EPISODE_SUCCESS_HOLD_S / self.cfg.ctrl_dt))
        x, y, z = self.object_pos.unbind(-1)
        lost = (x < WORKSPACE_X[0]) | (x > WORKSPACE_X[1]) | (y < WORKSPACE_Y[0]) | (y > WORKSPACE_Y[1]) | (z < MIN_OBJECT_Z)
        terminated = lost | nonfinite
        truncated = (self.episode_step >= self.cfg.max_episode_steps) & ~terminated
        done = terminated | truncated
        self.episode_return += reward
        info = {
            "reward_terms": terms, "success": success, "episode_success": self.success_steps >= hold_steps,
            "done": done, "episode_return": self.episode_return.clone(), "episode_length": self.episode_step.clone(),
            "nonfinite": nonfinite, "physics_overflow": overflow, "final_critic": self.obs_builder.critic(),
        }
        self.nonfinite_resets += nonfinite.sum()
        # On CPU a host check is free and skips the masked reset when no world finished; on
        # CUDA the masked reset runs every step rather than synchronizing the stream. Either
        # way the draws are the same: they are keyed by counters, not by how often we draw.
        if self.device.type != "cpu" or bool(done.any()):
            self._reset_where(done)
            p.kinematics()  # the reset worlds' new poses (p.step left the others current)
        self._render()
        obs = self.obs_builder.build()
        return StepResult(obs, reward, terminated, truncated, info)

    # ---- checkpointing ------------------------------------------------------------------
    _STATE = ("targets", "prev_action", "episode_step", "episode_count", "episode_return", "success_steps",
              "disturb_force", "nonfinite_resets", "palm_pos_prev", "tip_pos_prev")
    _PHYSICS = ("qpos", "qvel", "ctrl", "qacc_warmstart", "xfrc_applied")

    def state_dict(self) -> dict:
        """Everything the next step depends on, so a resumed run continues bit for bit (the
        random draws are functions of the counters in ``env``; there is no generator state)."""
        p, o = self.physics, self.obs_builder
        return {
            "physics": {k: getattr(p, k).clone() for k in self._PHYSICS},
            "fields": {k: v.clone() for k, v in p.fields.items()},
            "env": {k: getattr(self, k).clone() for k in self._STATE},
            "object_id": self.randomizer.object_id.clone(),
            "noise_width": {k: v.clone() for k, v in o.width.items()},
            "noise_bias": {k: v.clone() for k, v in o.bias.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        p, o = self.physics, self.obs_builder
        if state["physics"]["qpos"].shape != p.qpos.shape:
            raise ValueError(f"checkpoint holds {state['physics']['qpos'].shape[0]} worlds of this scene's "
                             f"layout {tuple(state['physics']['qpos'].shape)}, the env has {tuple(p.qpos.shape)}")
        if "episode_count" not in state["env"]:
            raise ValueError("checkpoint predates the counter-based env RNG (no episode_count); "
                             "start a new run or resume with the dexrl version that wrote it")
        for k in self._PHYSICS:
            getattr(p, k).copy_(state["physics"][k])
        for k, v in state["fields"].items():
            p.fields[k].copy_(v)
        for k in self._STATE:
            setattr(self, k, state["env"][k].to(self.device).clone())
        self.randomizer.object_id = state["object_id"].to(self.device).clone()
        o.width = {k: v.to(self.device).clone() for k, v in state["noise_width"].items()}
        o.bias = {k: v.to(self.device).clone() for k, v in state["noise_bias"].items()}
        p.kinematics()
        self._render()

    def _render(self) -> None:
        if self.rig is not None:
            self.rig.render()

    def set_randomization(self, randomization, reward) -> None:
        """New domain-randomization ranges (each world samples them at its next reset; the
        disturbance's bound at its next once-a-second resample, mid-episode, as in the lineage)
        and reward weights (from the next step): how ADR widens the task."""
        self.cfg = replace(self.cfg, randomization=randomization, reward=reward)
        if randomization.disturbance_accel <= 0:  # switched off: no step would lift the last force
            self.physics.xfrc_applied[:, self.scene.object_body, :3] = 0.0
            self.disturb_force.zero_()

    def close(self) -> None:
        self.rig = None
