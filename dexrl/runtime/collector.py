"""Collector: the environment plus policy inference, filling a rollout (T, N, ...)."""

from __future__ import annotations

import threading
import time

import torch

from dexrl.envs.grasp import GraspEnv
from dexrl.models import ActorCritic, ObsSpec
from dexrl.models.depth_codec import encode_depth, select
from dexrl.rl import RolloutStorage


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
        env, model = self.env, self.model
        stats = EpisodeStats()
        model.eval()
        for t in range(storage.cfg.num_steps):
            if self.stop.is_set():
                raise RolloutStopped
            # Recorded before stepping: a disaggregated env receives the next observations into
            # the buffers self.obs views (one receive buffer per tensor, see RemoteEnvs). On CUDA
            # the receive waits for this copy, queued earlier on the current stream.
            storage.insert_obs(t, self.obs)
            out, res, start = self._act_and_step(timer)
            # Time-outs bootstrap from V(final state), computed from its critic observation (the
            # value network's only input group, "critic"); a cheap MLP pass over all worlds.
            final = {"critic": res.info["final_critic"].to(self.device)}
            truncated_values = torch.where(res.truncated.to(self.device), model.value(final, out.state), out.value)
            storage.insert(t, None, self.reset, self.state, out, res.reward.to(self.device),
                           res.terminated.to(self.device), res.truncated.to(self.device), truncated_values)
            stats.add(res.info, res.reward)
            self.obs, self.state = self._select(res.obs), out.state
            self.reset = (res.terminated | res.truncated).to(self.device)
            timer("storage", start)
        storage.set_last_values(model.value(self.obs, self.state, self.reset))
        summary = stats.summary(env.cfg.ctrl_dt)
        # Envs that time their own phases (physics, render; sim vs transfer) report them here.
        for key, value in getattr(env, "pop_timings", dict)().items():
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
    """For disaggregated sims that hold two world groups: infer group 1 while the sims step
    group 0, so inference and transfer overlap simulation. Same rollout layout as Collector."""

    def _act_and_step(self, timer: PhaseTimer):
        env = self.env
        outs = []
        start = time.perf_counter()
        for g, rows in enumerate(env.group_rows):  # rows: (N / 2,) global world ids of group g
            out = self.model.act({k: select(v, 0, rows) for k, v in self.obs.items()},
                                 {k: v[:, rows] for k, v in self.state.items()}, self.reset[rows])
            env.send_group(g, out.action)
            outs.append(out)
        start = timer("inference", start)  # (includes sending; the sims are already stepping)
        res = env.receive()
        return _merge(outs, env.group_rows, env.n), res, timer("env", start)


def _merge(outs: list, rows: list[torch.Tensor], n: int):
    """Group outputs back into one PolicyOutput over all N worlds."""
    first = outs[0]

    def cat(get, dim=0):
        parts = [get(o) for o in outs]
        full = parts[0].new_empty(parts[0].shape[:dim] + (n,) + parts[0].shape[dim + 1:])
        for part, r in zip(parts, rows):
            full.index_copy_(dim, r, part)
        return full

    state = {k: cat(lambda o, k=k: o.state[k], dim=1) for k in first.state}
    return type(first)(cat(lambda o: o.action), cat(lambda o: o.log_prob), cat(lambda o: o.mean),
                       cat(lambda o: o.std), cat(lambda o: o.value), state)
