"""Typed configuration of the grasping environment: scene, cameras, actions, randomization."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dexrl.sim.objects import ObjectSetConfig


def parse_resolution(text: str) -> tuple[int, int]:
    """'160x120' -> (160, 120), with a clear error for anything else."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"resolution must look like WIDTHxHEIGHT (e.g. 160x120), got {text!r}") from None
    if not (8 <= w <= 2048 and 8 <= h <= 2048):
        raise ValueError(f"resolution {text!r} is out of range: width and height must be in [8, 2048]")
    return w, h


@dataclass
class CameraConfig:
    """The calibrated depth camera (ROS optical convention: +z forward) and its stereo RGB twin."""

    width: int = 160
    height: int = 120
    pos: tuple[float, float, float] = (-0.724, -0.689, 0.637)
    quat_optical: tuple[float, float, float, float] = (0.5157, -0.5207, 0.5366, 0.4183)  # wxyz
    hfov_deg: float = 48.0
    stereo_baseline_m: float = 0.065
    depth_min_m: float = 0.5
    depth_max_m: float = 1.3
    # Noise on the depth image (0 disables each): fraction of pixels dropped to 0, fraction
    # replaced by uniform random depths, and std (m) of a low-resolution correlated field.
    dropout_prob: float = 0.0
    random_pixel_prob: float = 0.0
    correlated_noise_m: float = 0.0
    # Per-reset pose jitter, uniform in +-value.
    jitter_pos_m: float = 0.03
    jitter_rot_deg: float = 3.0

    def __post_init__(self):
        if not (8 <= self.width <= 2048 and 8 <= self.height <= 2048):
            raise ValueError(f"camera resolution {self.width}x{self.height} is out of range [8, 2048]")
        if not 0 < self.depth_min_m < self.depth_max_m:
            raise ValueError("camera depth range needs 0 < depth_min_m < depth_max_m")
        if not 0.0 < self.hfov_deg < 180.0:
            raise ValueError(f"camera.hfov_deg must be in (0, 180), got {self.hfov_deg}")
        for name in ("dropout_prob", "random_pixel_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"camera.{name} must be in [0, 1]")


@dataclass
class RandomizationConfig:
    """Current domain-randomization ranges (the ADR controller widens them; ranges in, nothing
    else). ``(lo, hi)`` pairs are uniform ranges; single values are magnitudes."""

    friction: tuple[float, float] = (1.0, 1.0)  # scale on robot and object friction
    kp_scale: tuple[float, float] = (1.0, 1.0)
    kd_scale: tuple[float, float] = (1.0, 1.0)
    # Scale on each joint's friction unit (sim.robot.JOINT_FRICTION_UNIT_NM: arm 1 N·m, fingers
    # 0.01 N·m), drawn per joint.
    joint_friction_scale: tuple[float, float] = (0.0, 0.0)
    mass_scale: tuple[float, float] = (1.0, 1.0)
    disturbance_accel: float = 0.0  # m/s^2: force = mass * U(0, value), resampled each second
    # Object spawn area (x width, y width), m: xy uniform in +-width/2 around the spawn point;
    # ADR's terminal (0.5, 0.8) is the whole termination box x in [-0.8, -0.3], y in [-0.3, 0.5].
    spawn_width_m: tuple[float, float] = (0.0, 0.0)
    spawn_tilt_rad: float = 0.0  # object initial rotation: random axis, angle U(0, value)
    object_pos_noise_m: float = 0.0
    object_pos_bias_m: float = 0.0
    object_rot_noise: float = 0.0
    object_rot_bias: float = 0.0
    joint_pos_noise: float = 0.0
    joint_pos_bias: float = 0.0
    joint_vel_noise: float = 0.0
    joint_vel_bias: float = 0.0
    reset_joint_pos_noise: float = 0.0
    reset_joint_vel_noise: float = 0.0

    def __post_init__(self):
        for name, value in vars(self).items():
            if name == "spawn_width_m":  # two widths, not a range
                if len(value) != 2 or min(value) < 0:
                    raise ValueError(f"randomization.spawn_width_m must be two non-negative widths (x, y), got {value!r}")
                continue
            if isinstance(value, tuple) and len(value) != 2:
                raise ValueError(f"randomization.{name} must be a range (lo, hi), got {value!r}")
            lo, hi = (value if isinstance(value, tuple) else (0.0, value))
            if lo > hi or lo < 0:
                raise ValueError(f"randomization.{name} must be a non-negative range lo <= hi, got {value!r}")


@dataclass
class RewardConfig:
    """Reward weights (the ADR schedule moves the last three from start to terminal)."""

    hand_to_object_weight: float = 1.0
    hand_to_object_sharpness: float = -10.0
    object_to_goal_weight: float = 5.0
    object_to_goal_sharpness: float = -15.0
    lift_weight: float = 5.0
    lift_sharpness: float = -8.5
    finger_curl_weight: float = -0.01


@dataclass
class EnvConfig:
    num_envs: int = 16
    sim_dt: float = 1.0 / 120.0
    decimation: int = 2  # control at 1 / (sim_dt * decimation) = 60 Hz
    episode_s: float = 10.0
    action_space: str = "joint_delta"  # or "palm_synergy"
    joint_delta_scale: float = 0.1
    device: str = "cpu"
    seed: int = 0
    # Global id of this env's first world. Random draws are keyed by (seed, global world id,
    # counters), so K envs of N/K worlds with offsets 0, N/K, 2N/K, ... reproduce one env of
    # N worlds world for world (a sim rank holding world slice k sets k * N/K).
    world_offset: int = 0
    depth: bool = True  # render the depth camera (policy / teacher)
    stereo_rgb: bool = False  # render the stereo RGB pair (student)
    camera: CameraConfig = field(default_factory=CameraConfig)
    objects: ObjectSetConfig = field(default_factory=ObjectSetConfig)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    robot_xml: str | None = None  # a user's robot MJCF following dexrl.sim.robot's naming contract
    # Contact buffer per world: the 23 friction-loss rows plus up to ~30 contacts x 4 rows.
    nconmax_per_world: int = 48
    njmax_per_world: int = 160
    # Convex-collision (GJK/EPA) slots, pooled over all worlds. Each slot costs ~6.7 KiB of
    # step scratch (EPA polytope at 35 iterations): MuJoCo Warp's default, one per contact
    # (48), is ~320 KiB a world, most of the simulator's memory. A scripted grasp needs at
    # most 4 in a world; 12 leaves room for whole-hand grasps. An overflow drops contacts and
    # shows as the `physics/overflow` metric and a warning.
    naccdmax_per_world: int = 12
    solver_iterations: int = 30
    ls_iterations: int = 20

    def __post_init__(self):
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.world_offset < 0:
            raise ValueError(f"world_offset must be >= 0 (the global id of this env's first world), got {self.world_offset}")
        if self.action_space not in ("joint_delta", "palm_synergy"):
            raise ValueError(f"action_space must be 'joint_delta' or 'palm_synergy', got {self.action_space!r}")
        if not 1 <= self.naccdmax_per_world <= self.nconmax_per_world:
            raise ValueError(f"naccdmax_per_world must be in [1, nconmax_per_world={self.nconmax_per_world}], "
                             f"got {self.naccdmax_per_world}")
        if self.decimation < 1 or self.sim_dt <= 0:
            raise ValueError("decimation must be >= 1 and sim_dt > 0")
        if not self.joint_delta_scale > 0:
            raise ValueError(f"joint_delta_scale must be > 0 (rad per unit action), got {self.joint_delta_scale}")
        if not math.isfinite(self.episode_s):
            raise ValueError(f"episode_s must be a finite number of seconds, got {self.episode_s}")
        if self.max_episode_steps < 1:
            raise ValueError(f"episode_s ({self.episode_s}) must last at least one control step "
                             f"({self.ctrl_dt:.4g} s)")

    @property
    def ctrl_dt(self) -> float:
        return self.sim_dt * self.decimation

    @property
    def max_episode_steps(self) -> int:
        return int(round(self.episode_s / self.ctrl_dt))
