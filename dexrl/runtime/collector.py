"""Collector: the environment plus policy inference, filling a rollout (T, N, ...)."""

from __future__ import annotations

import threading
import time

import torch

from dexrl.envs.grasp import GraspEnv
from dexrl.models import ActorCritic, ObsSpec
from dexrl.models.depth_codec import encode_depth
from dexrl.rl import RolloutStorage
from dexrl.rl.storage import ALL


class RolloutStopped(Exception):
    """Collector.stop was set: the rollout was abandoned between two steps."""


class PhaseTimer:
    """Wall seconds per named phase; synchronizes CUDA at phase ends so times are real. Only
    the collector's stream (``stream``, or ``device``'s current one) is waited for, never the
    whole device: that would also wait for NCCL's receives posted ahead (a pipelined learner),
    holding the host inside CUDA where it can neither time out a silent sim nor take a signal."""

    def __init__(self, device: torch.device, stream: "torch.cuda.Stream | None" = None):
        self.stream = stream if stream is not None or device.type != "cuda" else torch.cuda.current_stream(device)
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, start: float) -> float:
        if self.stream is not None:
            self.stream.synchronize()
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - start
        return now


class EpisodeStats:
    """Running sums over one rollout: reward terms, success, and finished episodes. Finished
    episodes are summed under their done mask (float64) rather than gathered by it: a
    boolean-mask gather waits for the device on every step."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.ended: dict[str, torch.Tensor] = {}  # episodes, return, length, success: sums over ended episodes

    def add(self, info: dict, reward: torch.Tensor) -> None:
        for name, term in info["reward_terms"].items():
            self.sums[f"reward/{name}"] = self.sums.get(f"reward/{name}", 0.0) + term.mean()
        self.sums["reward/total"] = self.sums.get("reward/total", 0.0) + reward.mean()
        self.sums["success_rate"] = self.sums.get("success_rate", 0.0) + info["success"].float().mean()
        overflow = info["physics_overflow"].float().mean()  # share of worlds that dropped contacts
        self.sums["physics/overflow"] = self.sums.get("physics/overflow", 0.0) + overflow
        done = info["done"]  # (N,)
        for key, value in (("episodes", done), ("return", info["episode_return"]),
                           ("length", info["episode_length"]), ("success", info["episode_success"])):
            ended = torch.where(done, value.double(), 0.0)  # (not value * done: a running NaN would spread)
            self.ended[key] = self.ended.get(key, 0.0) + ended.sum()
        self.steps += 1

    def summary(self, ctrl_dt: float) -> dict[str, float]:
        out = {k: float(v) / self.steps for k, v in self.sums.items()}
        episodes = int(self.ended.get("episodes", 0))
        out["episodes"] = episodes
        if episodes:
            out["episode/return"] = float(self.ended["return"]) / episodes
            out["episode/length_s"] = float(self.ended["length"]) / episodes * ctrl_dt
            out["episode/success"] = float(self.ended["success"]) / episodes
        return out


class Collector:
    """Steps ``env`` with ``model`` for T steps per call and records them in the storage.

    It keeps what crosses iterations: the current observation, the recurrent state and the
    reset flags (True where the observation starts an episode)."""

    def __init__(self, env: GraspEnv, model: ActorCritic, spec: ObsSpec, device: torch.device,
                 first_obs: dict[str, torch.Tensor], image_dtype: str = "float16"):
        self.env, self.model, self.spec, self.device = env, model, spec, device
        self.image_dtype = image_dtype
        # Set from another thread to end a rollout running on the collector thread at its next
        # step (overlap_update: a second Ctrl-C must not wait out the whole rollout).
        self.stop = threading.Event()
        self.keys = tuple(spec.vector_dims) + ((spec.image_key,) if spec.image_key else ())
        self.obs = self._select(first_obs)
        self.state = model.initial_state(env.n, device)
        self.reset = torch.ones(env.n, dtype=torch.bool, device=device)

    def _select(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The spec's keys on the learner device. Images are kept in the compact dtype they
        are stored (and, between processes, sent) in: every runtime's policy sees the same
        pixels, and the learner holds 2 bytes a pixel, not 4, for all its worlds (the encoder
        decodes a chunk at a time)."""
        out = {k: obs[k].to(self.device, non_blocking=True) for k in self.keys}
        key = self.spec.image_key
        if key is not None:
            out[key] = encode_depth(out[key], self.image_dtype)
        return out

    def _act_and_step(self, timer: PhaseTimer):
        start = time.perf_counter()
        out = self.model.act(self.obs, self.state, self.reset)
        start = timer("inference", start)
        res = self.env.step(out.action.to(self.env.device))
        return out, res, timer("env", start)

    def collect(self, storage: RolloutStorage, timer: PhaseTimer) -> dict[str, float]:
        stats = EpisodeStats()
        self.model.eval()
        for t in range(storage.cfg.num_steps):
            if self.stop.is_set():
                raise RolloutStopped
            # Recorded before stepping: a disaggregated env receives the next observations into
            # the buffers self.obs views (one receive buffer per tensor, see RemoteEnvs). On CUDA
            # the receive waits for this copy, queued earlier on the current stream.
            storage.insert_obs(t, self.obs)
            out, res, start = self._act_and_step(timer)
            self._record(storage, stats, t, ALL, out, res)
            timer("storage", start)
        return self._finish(storage, stats, timer)

    def _record(self, storage: RolloutStorage, stats: EpisodeStats, t: int, rows: slice, out, res) -> None:
        """Step t of the worlds ``rows`` (all, or a pipelined group's) into the storage and the
        statistics; then their next observations, recurrent state and reset flags."""
        # Time-outs bootstrap from V(final state), computed from its critic observation (the
        # value network's only input group, "critic"); a cheap MLP pass over the worlds.
        final = {"critic": res.info["final_critic"].to(self.device)}
        terminated, truncated = res.terminated.to(self.device), res.truncated.to(self.device)
        truncated_values = torch.where(truncated, self.model.value(final, out.state), out.value)
        state = {k: v[:, rows] for k, v in self.state.items()}  # (L, n, H) the state act was given
        storage.insert(t, None, self.reset[rows], state, out, res.reward.to(self.device), terminated, truncated,
                       truncated_values, rows)
        stats.add(res.info, res.reward)
        self._take(rows, self._select(res.obs), out.state, terminated | truncated)

    def _take(self, rows: slice, obs: dict[str, torch.Tensor], state: dict[str, torch.Tensor], reset: torch.Tensor) -> None:
        self.obs, self.state, self.reset = obs, state, reset  # rows is every world

    def _finish(self, storage: RolloutStorage, stats: EpisodeStats, timer: PhaseTimer) -> dict[str, float]:
        """The rollout's last values and its statistics, with the env's own phase timings."""
        storage.set_last_values(self.model.value(self.obs, self.state, self.reset))
        summary = stats.summary(self.env.cfg.ctrl_dt)
        # Envs that time their own phases (physics, render; sim vs transfer) report them here.
        for key, value in getattr(self.env, "pop_timings", dict)().items():
            if key.startswith("time/"):
                timer.seconds[key[5:-2]] = value
            else:
                summary[key] = value
        return summary

    def state_dict(self) -> dict:
        return {"obs": self.obs, "state": self.state, "reset": self.reset}

    def load_state_dict(self, state: dict) -> None:
        self.obs = {k: v.to(self.device) for k, v in state["obs"].items()}
        self.state = {k: v.to(self.device) for k, v in state["state"].items()}
        self.reset = state["reset"].to(self.device)


class PipelinedCollector(Collector):
    """For disaggregated sims that hold two world groups, each one slice of the rollout
    (``env.group_rows``): a group's next step is inferred and sent as soon as its last step
    arrives, while the sims step the other group. Each group's physics hides the other's
    inference, transfer and recording; the groups meet only at the rollout's end. Same rollout
    layout as Collector; the policy acts on half batches, which may round differently."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Its own copy, refreshed a group's rows at a time: a received image is valid only until
        # its group's next send.
        self.obs = {k: v.clone() for k, v in self.obs.items()}

    def collect(self, storage: RolloutStorage, timer: PhaseTimer) -> dict[str, float]:
        stats, groups = EpisodeStats(), self.env.group_rows
        self.model.eval()
        outs = [None] * len(groups)  # each group's policy output for the step in flight
        for t in range(storage.cfg.num_steps):
            if self.stop.is_set():
                raise RolloutStopped
            for g, rows in enumerate(groups):
                if t > 0:
                    self._arrived(storage, stats, timer, t - 1, g, outs[g])
                storage.insert_obs(t, {k: v[rows] for k, v in self.obs.items()}, rows)
                start = time.perf_counter()
                outs[g] = self.model.act({k: v[rows] for k, v in self.obs.items()},
                                         {k: v[:, rows] for k, v in self.state.items()}, self.reset[rows])
                self.env.send_group(g, outs[g].action.to(self.env.device))
                timer("inference", start)  # (includes posting the send)
        for g in range(len(groups)):
            self._arrived(storage, stats, timer, storage.cfg.num_steps - 1, g, outs[g])
        return self._finish(storage, stats, timer)

    def _arrived(self, storage: RolloutStorage, stats: EpisodeStats, timer: PhaseTimer, t: int, g: int, out) -> None:
        """Wait for group g's step t, then record it."""
        start = time.perf_counter()
        res = self.env.receive_group(g)
        start = timer("env", start)
        self._record(storage, stats, t, self.env.group_rows[g], out, res)
        timer("storage", start)

    def _take(self, rows: slice, obs: dict[str, torch.Tensor], state: dict[str, torch.Tensor], reset: torch.Tensor) -> None:
        for key, value in obs.items():
            self.obs[key][rows] = value
        for key, value in state.items():
            self.state[key][:, rows] = value
        self.reset[rows] = reset
