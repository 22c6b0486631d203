"""The training run's typed config, its named presets, JSON round-trip and `--set` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field

from dexrl.config.env import CameraConfig, EnvConfig
from dexrl.config.rl import ModelConfig, PPOConfig

POLICY_INPUTS = ("depth", "state")
RUNTIMES = ("single", "dp", "disagg")


@dataclass
class TrainConfig:
    """Everything one run needs. ``policy_input`` picks the actor's observation: 'depth'
    (depth image + proprioception, the paper's end-to-end policy) or 'state' (the
    state-teacher group: proprioception + noisy object pose + shape)."""

    preset: str = "quickstart"
    policy_input: str = "depth"
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    max_iterations: int = 100
    checkpoint_every: int = 25
    seed: int = 0
    # Runtime wiring. env.num_envs is the total over all ranks: data-parallel ranks hold
    # num_envs / ranks worlds each, disaggregated sim ranks num_envs / sim_ranks.
    runtime: str = "single"
    ranks: int = 1  # data-parallel processes
    sim_ranks: int = 1  # disaggregated simulator processes (plus one learner)
    learner_device: str = ""  # "" = env.device
    backend: str = "auto"  # torch.distributed backend: auto (nccl if each rank has a GPU, else gloo), nccl, gloo
    fault_timeout_s: float = 60.0  # a silent or dead peer stops the run within this time
    # disagg: a sim rank exits when the learner sends nothing for this long after start-up;
    # it must cover the learner's longest silence (a PPO update plus a checkpoint).
    learner_timeout_s: float = 1800.0
    # disagg: the worlds as two groups, each a half of the rollout held in slices by every sim
    # rank; a group's next step is inferred and sent as soon as its last arrives, while the
    # sims step the other group (beyond the paper's Algorithms 1-2).
    pipeline: bool = False
    # Collect the next rollout (on a second thread, into a second rollout storage) while PPO
    # updates on the last one, with the parameters from before that update: the sims no longer
    # idle during the update, at the cost of a one-iteration policy lag (beyond the paper).
    overlap_update: bool = False
    # Automatic Domain Randomization: on (start ranges, widen with success), off (the env's
    # configured ranges, fixed), max (terminal ranges from the start: distillation, eval).
    adr: str = "on"

    def __post_init__(self):
        if self.policy_input not in POLICY_INPUTS:
            raise ValueError(f"policy_input must be one of {POLICY_INPUTS}, got {self.policy_input!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"backend must be auto, nccl or gloo, got {self.backend!r}")
        if self.ranks < 1 or self.sim_ranks < 1:
            raise ValueError(f"ranks and sim_ranks must be >= 1, got {self.ranks} and {self.sim_ranks}")
        parts = {"dp": self.ranks, "disagg": self.sim_ranks}.get(self.runtime, 1)
        if self.env.num_envs % parts:
            raise ValueError(f"env.num_envs ({self.env.num_envs}) must split evenly over {parts} "
                             f"{'sim ranks' if self.runtime == 'disagg' else 'ranks'}")
        if self.pipeline and (self.runtime != "disagg" or (self.env.num_envs // self.sim_ranks) % 2):
            raise ValueError("pipeline needs --runtime disagg and an even number of worlds per sim rank")
        if self.learner_device and self.runtime != "disagg":
            raise ValueError("learner_device places the disaggregated learner; the other runtimes learn where "
                             "they simulate (env.device)")
        if self.adr not in ("on", "off", "max"):
            raise ValueError(f"adr must be on, off or max, got {self.adr!r}")
        if self.fault_timeout_s <= 0 or self.learner_timeout_s <= 0:
            raise ValueError("fault_timeout_s and learner_timeout_s must be > 0")
        if self.max_iterations < 1 or self.checkpoint_every < 1:
            raise ValueError("max_iterations and checkpoint_every must be >= 1")
        if self.runtime == "dp" and (self.env.num_envs // self.ranks) % self.ppo.num_minibatches:
            raise ValueError(f"each data-parallel rank trains on its own {self.env.num_envs // self.ranks} worlds "
                             f"(env.num_envs {self.env.num_envs} / {self.ranks} ranks), which must be a multiple "
                             f"of ppo.num_minibatches ({self.ppo.num_minibatches}); change one of them")
        self.ppo.check_num_envs(self.env.num_envs)
        if self.policy_input == "depth" and not self.env.depth:
            raise ValueError("policy_input 'depth' needs env.depth = true")


def world_split(cfg: TrainConfig) -> str:
    """How the worlds are split over processes (e.g. '8 worlds on 2 data-parallel ranks');
    environment state saved under one split does not load into another."""
    where = {"dp": f"on {cfg.ranks} data-parallel ranks",
             "disagg": f"on {cfg.sim_ranks} sim ranks" + (" in two pipelined world groups" if cfg.pipeline else "")}
    return f"{cfg.env.num_envs} worlds " + where.get(cfg.runtime, "in one process")


def network_settings(cfg: TrainConfig) -> dict[str, object]:
    """The settings a run's network and normalizers are built for (its inputs, outputs and
    layers). A resumed run keeps them: some would not load (another shape), and others, such
    as the activation, would load and silently change what the weights compute."""
    model = {f"model.{k}": v for k, v in to_dict(cfg.model).items() if k != "encoder_chunk"}  # chunking: memory only
    return {**model, "policy_input": cfg.policy_input, "env.camera.width": cfg.env.camera.width,
            "env.camera.height": cfg.env.camera.height, "env.action_space": cfg.env.action_space,
            "env.robot_xml": cfg.env.robot_xml, "ppo.normalize_obs": cfg.ppo.normalize_obs,
            "ppo.normalize_value": cfg.ppo.normalize_value}


def quickstart() -> TrainConfig:
    """CPU, a few minutes: 32 worlds, 80x60 depth, a small network, 4 s episodes, and the
    palm_synergy action space (absolute palm pose + hand synergies), whose reward for
    reaching the object a short run can climb. Shows the loop works and the reward rises;
    it does not learn to grasp in that time."""
    return TrainConfig(
        preset="quickstart",
        env=EnvConfig(num_envs=32, episode_s=4.0, action_space="palm_synergy", camera=CameraConfig(width=80, height=60)),
        model=ModelConfig(lstm_hidden=128, lstm_layers=1, mlp=(128, 128, 64), critic_mlp=(128, 128, 64),
                          encoder_channels=(8, 16, 32, 32), init_log_std=-0.5),
        ppo=PPOConfig(num_steps=16, num_minibatches=2, lr=3e-4),
        max_iterations=40, checkpoint_every=10,
    )


def teacher_depth() -> TrainConfig:
    """The paper's end-to-end depth policy: 160x120 depth, CNN + 2x1024 LSTM + 512-512-256,
    horizon 16, 4 epochs, lr 1e-4, gamma 0.998, lambda 0.95, clip 0.2, entropy 0.002, critic
    coefficient 4, seq_length 16 (the ModelConfig / PPOConfig defaults)."""
    return TrainConfig(
        preset="teacher-depth",
        env=EnvConfig(num_envs=4096, device="cuda", camera=CameraConfig(width=160, height=120)),
        # Backward passes of at most 512 envs: update memory stays fixed as worlds grow.
        model=ModelConfig(), ppo=PPOConfig(num_minibatches=4, microbatch_envs=512),
        max_iterations=20000, checkpoint_every=500,
    )


def teacher_state() -> TrainConfig:
    """State teacher on the same task (paper lineage: 4096 worlds per GPU, minibatch 16384 =
    4096 x 16 / 4), no camera."""
    return TrainConfig(
        preset="teacher-state", policy_input="state",
        env=EnvConfig(num_envs=4096, device="cuda", depth=False),
        model=ModelConfig(actor_kind="lstm", lstm_hidden=1024, lstm_layers=1),
        ppo=PPOConfig(num_minibatches=4, lr=1e-4),
        max_iterations=20000, checkpoint_every=500,
    )


PRESETS = {"quickstart": quickstart, "teacher-depth": teacher_depth, "teacher-state": teacher_state}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]()


# ---- JSON round trip ------------------------------------------------------------------------
def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


class ConfigFormError(ValueError):
    """A stored config whose value does not fit the current option's type."""


_SCALARS = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
_SCALAR_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(tp, value, path: str):
    """A JSON value as type ``tp`` (dataclasses recursively, lists to tuples)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigFormError(f"option {path} must be a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else typing.Any
        return tuple(_coerce(inner, v, path) for v in value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return value if value is None else _coerce(args[0], value, path)
    if tp in _SCALARS:
        # bool is an int to Python, not to a config: true for a count is a mistake.
        if isinstance(value, bool) != (tp is bool) or not isinstance(value, _SCALARS[tp]):
            raise ConfigFormError(f"option {path} must be {_SCALAR_NAMES[tp]}, got {value!r}")
        return float(value) if tp is float else value
    return value


def from_dict(cls, data: dict, path: str = ""):
    """Build dataclass ``cls`` from a dict; an unknown key or a value of the wrong form fails
    naming the option's full path."""
    if not isinstance(data, dict):
        raise ConfigFormError(f"option {path.rstrip('.') or cls.__name__} must be a section, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(path + k for k in sorted(unknown))}")
    return cls(**{k: _coerce(hints[k], v, path + k) for k, v in data.items()})


def dumps(cfg: TrainConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2)


def loads(text: str) -> TrainConfig:
    return from_dict(TrainConfig, json.loads(text))


def _did_you_mean(parents: list[str], key: str, node: dict) -> str:
    close = difflib.get_close_matches(key, list(node), n=1)
    return f" (did you mean {'.'.join([*parents, close[0]])}?)" if close else ""


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """``["ppo.lr=3e-4", "env.camera.width=80"]`` -> a new, validated config. Values are JSON
    (numbers, true/false, lists) or plain strings; a misspelt key fails at start-up."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        path, raw = item.split("=", 1)
        node, keys = data, path.split(".")
        for i, key in enumerate(keys[:-1]):
            if not isinstance(node.get(key), dict):
                raise ValueError(f"unknown option {path!r}: {key!r} is not a section{_did_you_mean(keys[:i], key, node)}")
            node = node[key]
        if keys[-1] not in node:
            raise ValueError(f"unknown option {path!r}{_did_you_mean(keys[:-1], keys[-1], node)}; "
                             "dexrl train --print-config lists every option")
        try:  # a string option takes the text as it is (--set env.device=0 is not a number)
            node[keys[-1]] = raw if isinstance(node[keys[-1]], str) else json.loads(raw)
        except json.JSONDecodeError:
            node[keys[-1]] = raw
    return from_dict(TrainConfig, data)
