"""Automatic Domain Randomization: ranges + statistics in, new ranges out (pure).

Every parameter moves linearly from its start value to its terminal value in NUM_STEPS
increments, all together (one shared level). One increment is taken when the mean fraction
of worlds in the success region is at least SUCCESS_THRESHOLD (the paper: 0.4) and at least MIN_RESETS episodes
ended since the last change. Ranges never shrink. In multi-rank runs each rank proposes, and
the global minimum decides, so all ranks agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dexrl.config.env import RandomizationConfig, RewardConfig

NUM_STEPS = 50
SUCCESS_THRESHOLD = 0.4
MIN_RESETS = 3000
MODES = ("on", "off", "max")


@dataclass(frozen=True)
class Param:
    """One randomized quantity: ``start`` -> ``terminal``, each a (lo, hi) range or a scalar."""

    name: str
    section: str  # "randomization" or "reward": which config it lands in
    start: tuple[float, float] | float
    terminal: tuple[float, float] | float

    def at(self, frac: float):
        """The value at progress ``frac`` in [0, 1]: linear in each bound."""
        if isinstance(self.start, tuple):
            return tuple(s + frac * (t - s) for s, t in zip(self.start, self.terminal))
        return self.start + frac * (self.terminal - self.start)


# The paper lineage's parameters (start -> terminal).
PARAMS = (
    Param("friction", "randomization", (1.0, 1.0), (0.5, 1.2)),  # static friction scale
    Param("kp_scale", "randomization", (1.0, 1.0), (0.5, 2.0)),
    Param("kd_scale", "randomization", (1.0, 1.0), (0.5, 2.0)),
    Param("joint_friction_scale", "randomization", (0.0, 0.0), (0.0, 5.0)),
    Param("mass_scale", "randomization", (1.0, 1.0), (0.5, 3.0)),
    Param("disturbance_accel", "randomization", 0.0, 10.0),  # m/s^2
    Param("spawn_width_m", "randomization", (0.0, 0.0), (0.5, 0.8)),  # x, y widths
    Param("spawn_tilt_rad", "randomization", 0.0, 3.14159),
    Param("object_pos_noise_m", "randomization", 0.0, 0.03),
    Param("object_pos_bias_m", "randomization", 0.0, 0.02),
    Param("object_rot_noise", "randomization", 0.0, 0.1),
    Param("object_rot_bias", "randomization", 0.0, 0.08),
    Param("joint_pos_noise", "randomization", 0.0, 0.08),
    Param("joint_pos_bias", "randomization", 0.0, 0.08),
    Param("joint_vel_noise", "randomization", 0.0, 0.18),
    Param("joint_vel_bias", "randomization", 0.0, 0.08),
    Param("reset_joint_pos_noise", "randomization", 0.0, 0.35),
    Param("reset_joint_vel_noise", "randomization", 0.0, 1.0),
    Param("object_to_goal_sharpness", "reward", -15.0, -20.0),
    Param("lift_weight", "reward", 5.0, 0.0),
    Param("finger_curl_weight", "reward", -0.01, -0.005),
)


@dataclass(frozen=True)
class ADRState:
    level: int = 0  # increments taken, 0..NUM_STEPS
    resets_since_change: int = 0

    @property
    def progress(self) -> float:
        return self.level / NUM_STEPS

    @property
    def full(self) -> bool:
        return self.level >= NUM_STEPS


def initial_state(mode: str) -> ADRState:
    if mode not in MODES:
        raise ValueError(f"adr must be one of {MODES}, got {mode!r}")
    return ADRState(level=NUM_STEPS if mode == "max" else 0)


def propose(state: ADRState, success_fraction: float, resets: int) -> bool:
    """Would this rank take an increment now? ``resets``: episodes ended in this window."""
    return (not state.full and success_fraction >= SUCCESS_THRESHOLD
            and state.resets_since_change + resets >= MIN_RESETS)


def update(state: ADRState, resets: int, agreed: bool, mode: str = "on") -> ADRState:
    """The next state, given this window's resets and the (rank-agreed) decision. Levels only
    grow; 'off' and 'max' never move."""
    if mode != "on":
        return state
    if agreed and not state.full:
        return ADRState(state.level + 1, 0)
    return ADRState(state.level, state.resets_since_change + resets)


def apply(state: ADRState, randomization: RandomizationConfig, reward: RewardConfig,
          params: tuple[Param, ...] = PARAMS) -> tuple[RandomizationConfig, RewardConfig]:
    """The randomization and reward configs at the state's level."""
    frac = state.progress
    rand = {p.name: p.at(frac) for p in params if p.section == "randomization"}
    rew = {p.name: p.at(frac) for p in params if p.section == "reward"}
    return replace(randomization, **rand), replace(reward, **rew)


def metrics(state: ADRState, params: tuple[Param, ...] = PARAMS) -> dict[str, float]:
    """adr_progress (mean over parameters), adr_full, adr_level and adr_param/<name>: with one
    shared level every parameter has the same progress."""
    out = {"adr_progress": state.progress, "adr_full": float(state.full), "adr_level": float(state.level)}
    out.update({f"adr_param/{p.name}": state.progress for p in params})
    return out
