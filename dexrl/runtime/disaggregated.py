"""Disaggregated simulation (the paper's Algorithms 1 and 2).

Sim ranks 0..K-1 hold only a GraspEnv over their slice of the worlds; the learner rank K
holds the policy, the rollout storage and PPO. Every step the learner sends each sim rank
a command header and its actions, and receives (obs, reward, terminated, truncated, episode
statistics) into preallocated buffers, with non-blocking point-to-point calls. On the
learner, ``RemoteEnvs`` stands in for a GraspEnv, so the Collector and Trainer are the same
code as in a single process.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from dexrl.config.train import TrainConfig
from dexrl.envs.grasp import GraspEnv, StepResult
from dexrl.envs.rewards import REWARD_TERMS
from dexrl.models.depth_codec import encode_depth
from dexrl.runtime import comm
from dexrl.runtime.checkpoint import to_host

CMD_STEP, CMD_STATE, CMD_LOAD, CMD_STOP, CMD_RANGES = 0, 1, 2, 3, 4
AUX = tuple(REWARD_TERMS) + ("success", "done", "episode_return", "episode_length", "episode_success",
                             "physics_overflow")


def wire_keys(cfg: TrainConfig) -> tuple[str, ...]:
    """Observation groups the learner needs, image first."""
    return ("depth", "proprio", "critic") if cfg.policy_input == "depth" else ("state_teacher", "critic")


def num_groups(cfg: TrainConfig) -> int:
    return 2 if cfg.pipeline else 1


def sim_env_config(cfg: TrainConfig, sim_index: int, device: str, group: int = 0):
    """Sim k holds worlds [k*n, (k+1)*n); with pipelining as two groups of n/2."""
    from dexrl.runtime.single import adr_env_config

    n = cfg.env.num_envs // cfg.sim_ranks
    m = n // num_groups(cfg)
    return replace(adr_env_config(cfg), num_envs=m, world_offset=sim_index * n + group * m, device=device)


# ---- simulator rank (Algorithm 1) ----------------------------------------------------------
class SimRank:
    def __init__(self, cfg: TrainConfig, sim_index: int, learner: int, device: str):
        self.cfg, self.learner = cfg, learner
        self.timeout_s = comm.STARTUP_TIMEOUT_S  # until the learner's first command, then cfg.learner_timeout_s
        self.envs = [GraspEnv(sim_env_config(cfg, sim_index, device, g)) for g in range(num_groups(cfg))]
        self.keys = wire_keys(cfg)
        self.image_dtype = cfg.ppo.image_dtype
        self.wire = comm.wire_device()

    def _obs_tensors(self, obs: dict) -> list[torch.Tensor]:
        out = []
        for k in self.keys:
            x = obs[k]
            out.append((encode_depth(x, self.image_dtype) if k == "depth" else x).to(self.wire))
        return out

    def _step_tensors(self, res: StepResult, sim_s: float) -> list[torch.Tensor]:
        info = res.info
        aux = torch.stack([*(info["reward_terms"][k] for k in REWARD_TERMS), info["success"].float(),
                           info["done"].float(), info["episode_return"], info["episode_length"].float(),
                           info["episode_success"].float(), info["physics_overflow"].float()],
                          dim=-1)  # (n, len(AUX))
        parts = [*self._obs_tensors(res.obs), res.reward, res.terminated, res.truncated, info["final_critic"], aux,
                 torch.tensor([sim_s], dtype=torch.float64)]
        return [p.to(self.wire) for p in parts]

    def _send(self, tensors: list[torch.Tensor]) -> None:
        comm.wait(comm.isend(tensors, self.learner), self.timeout_s, self.learner, "learner")

    def _recv(self, tensors: list[torch.Tensor]) -> None:
        comm.wait(comm.irecv(tensors, self.learner), self.timeout_s, self.learner, "learner")

    def run(self) -> None:
        envs, learner = self.envs, self.learner
        first = [env.reset() for env in envs]
        layout = [(k, tuple(t.shape), str(t.dtype)) for k, t in zip(self.keys, self._obs_tensors(first[0]))]
        comm.send_object({"num_envs": sum(e.n for e in envs), "groups": len(envs), "action_dim": envs[0].action_dim,
                          "layout": layout}, learner, self.timeout_s, "learner")
        for obs in first:
            self._send(self._obs_tensors(obs))
        header = torch.zeros(2, dtype=torch.int64, device=self.wire)  # (command, world group)
        actions = torch.zeros(envs[0].n, envs[0].action_dim, device=self.wire)
        while True:
            self._recv([header])
            self.timeout_s = self.cfg.learner_timeout_s
            cmd, group = int(header[0]), int(header[1])
            if cmd == CMD_STEP:
                env = envs[group]
                self._recv([actions])
                start = time.perf_counter()
                res = env.step(actions.to(env.device))
                if env.device.type == "cuda":  # the step's kernels, not only their launches
                    torch.cuda.current_stream(env.device).synchronize()
                self._send(self._step_tensors(res, time.perf_counter() - start))
            elif cmd == CMD_STATE:  # in host memory: unpickled on the learner, it must not land on this GPU
                comm.send_object([to_host(env.state_dict()) for env in envs], learner, self.timeout_s, "learner")
            elif cmd == CMD_LOAD:
                for env, state in zip(envs, comm.recv_object(learner, self.timeout_s, "learner")):
                    env.load_state_dict(state)
            elif cmd == CMD_RANGES:  # ADR moved: new randomization ranges and reward weights
                ranges = comm.recv_object(learner, self.timeout_s, "learner")
                for env in envs:
                    env.set_randomization(*ranges)
            elif cmd == CMD_STOP:
                return


# ---- learner side (Algorithm 2): the sims as one batched env -------------------------------
class RemoteEnvs:
    """K sim ranks seen as one env of N worlds (sim k holds worlds [k*n, (k+1)*n), as one or
    two world groups of consecutive ids)."""

    def __init__(self, cfg: TrainConfig, sim_ranks: list[int], device: torch.device, timeout_s: float):
        self.cfg, self.sims, self.device, self.timeout_s = cfg.env, sim_ranks, device, timeout_s
        self.wire = comm.wire_device()
        # Start-up (scene compilation, first kernel builds) may take minutes on a cold cache.
        hello = [comm.recv_object(r, max(timeout_s, comm.STARTUP_TIMEOUT_S), "sim") for r in sim_ranks]
        self.per_sim, self.groups = hello[0]["num_envs"], hello[0]["groups"]
        self.half = self.per_sim // self.groups
        self.n, self.action_dim = self.per_sim * len(sim_ranks), hello[0]["action_dim"]
        dtype = {str(t): t for t in (torch.float32, torch.float16, torch.uint16, torch.bool, torch.int64)}
        # One buffer per tensor for all N worlds; each (sim, group) receives straight into its
        # rows. Observations have one buffer, not two: the Collector records step t's in the
        # rollout storage before it asks for step t+1 (Collector.collect).
        self.obs_buf = {k: torch.empty((self.n, *shape[1:]), dtype=dtype[dt], device=self.wire)
                        for k, shape, dt in hello[0]["layout"]}
        self.reward = torch.empty(self.n, device=self.wire)
        self.terminated = torch.empty(self.n, dtype=torch.bool, device=self.wire)
        self.truncated = torch.empty(self.n, dtype=torch.bool, device=self.wire)
        self.final_critic = torch.empty(self.n, self.obs_buf["critic"].shape[1], device=self.wire)
        self.aux = torch.empty(self.n, len(AUX), device=self.wire)
        self.sim_seconds = torch.zeros(len(sim_ranks), self.groups, 1, dtype=torch.float64, device=self.wire)
        self.header = torch.zeros(len(sim_ranks), self.groups, 2, dtype=torch.int64, device=self.wire)
        # (N / groups,) global ids of each group, sims in ascending order: the rows a
        # pipelined Collector acts on together.
        self.group_rows = [torch.cat([torch.arange(self.n, device=device)[self._rows(i, g)]
                                      for i in range(len(sim_ranks))]) for g in range(self.groups)]
        self.bytes_per_step = sum(t.numel() * t.element_size() for t in self._step_buffers(slice(None)))
        self._wait([(r, comm.irecv(list(self._obs_rows(self._rows(i, g)).values()), r))
                    for i, r in enumerate(sim_ranks) for g in range(self.groups)])
        self.first_obs = self._obs()
        self._wait_s = self._sim_s = 0.0
        self._steps, self._sim_each = 0, torch.zeros(len(sim_ranks), dtype=torch.float64)  # (K,) env.step seconds
        self._actions: list = [None] * self.groups  # kept alive until their sends complete
        self._pending: list = []
        self._stepped = False

    def _rows(self, i: int, g: int = 0) -> slice:
        start = i * self.per_sim + g * self.half
        return slice(start, start + self.half)

    def _obs_rows(self, rows: slice) -> dict[str, torch.Tensor]:
        return {k: v[rows] for k, v in self.obs_buf.items()}

    def _step_buffers(self, rows: slice) -> list[torch.Tensor]:
        return [*self._obs_rows(rows).values(), self.reward[rows], self.terminated[rows], self.truncated[rows],
                self.final_critic[rows], self.aux[rows]]

    def _wait(self, works: list, timeout_s: float | None = None) -> None:
        """Wait for (sim rank, requests) pairs; a dead or silent sim raises RankFailure."""
        for rank, w in works:
            comm.wait(w, timeout_s or self.timeout_s, rank, "sim")

    def _send_all(self, cmd: int, group: int = 0, actions: torch.Tensor | None = None, wait: bool = True) -> list:
        """Header (command, group) to every sim, then its rows of ``actions`` (group order)."""
        works = []
        for i, rank in enumerate(self.sims):
            header = self.header[i, group]
            header[0], header[1] = cmd, group
            tensors = [header] + ([actions[i * self.half:(i + 1) * self.half]] if actions is not None else [])
            works.append((rank, comm.isend(tensors, rank)))
        if wait:
            for rank, w in works:
                comm.wait(w, self.timeout_s, rank, "sim")
            return []
        return works

    def _obs(self) -> dict[str, torch.Tensor]:
        # Images stay compact: the Collector keeps them so (see Collector._select).
        return {k: v.to(self.device, non_blocking=True) for k, v in self.obs_buf.items()}

    def reset(self) -> dict[str, torch.Tensor]:
        """The sims reset once at start-up (Algorithm 1, line 2); this returns that observation."""
        return self.first_obs

    def pop_timings(self) -> dict[str, float]:
        """Since the last call: the slowest sim's env.step seconds ('sim'), the rest of the
        learner's wait for the sims ('transfer'), bytes received and sent per step, and the
        sims' sim-only rate: the sum over sim ranks of worlds x steps / that rank's env.step
        seconds (what they would reach if they never waited for the learner)."""
        out = {"time/sim_s": self._sim_s, "time/transfer_s": max(self._wait_s - self._sim_s, 0.0),
               "transfer/bytes_per_step": float(self.bytes_per_step + self.n * self.action_dim * 4)}
        if self._steps and bool((self._sim_each > 0).all()):
            out["sims/sim_only_env_steps_per_s"] = float((self.per_sim * self._steps / self._sim_each).sum())
        self._wait_s = self._sim_s = 0.0
        self._steps, self._sim_each = 0, torch.zeros_like(self._sim_each)
        return out

    def send_group(self, group: int, actions: torch.Tensor) -> None:
        """Start the sims on world group ``group``; ``actions`` (N / groups, A) in row order.
        Its results' receives are posted right behind: under NCCL a pair's requests run in the
        order they were posted, and a sim sends group 0's results before it takes group 1's
        command, so a receive posted after group 1's send would wait behind that send, and the
        send for the sim, which waits for the receive."""
        if group == 0:
            self._start = time.perf_counter()
            self._pending = []
        # Waited for in receive_groups: the sims are still busy with earlier groups.
        self._actions[group] = actions.to(self.wire, torch.float32).contiguous()
        self._pending += self._send_all(CMD_STEP, group, self._actions[group], wait=False)
        self._pending += [(rank, comm.irecv(self._step_buffers(self._rows(i, group)) + [self.sim_seconds[i, group]],
                                            rank)) for i, rank in enumerate(self.sims)]

    def receive_groups(self) -> StepResult:
        """Every group's step results, gathered into one StepResult over all N worlds."""
        # The sims' first step builds MuJoCo Warp's step kernels (a CUDA graph capture on a GPU):
        # minutes on a cold cache, so it has the start-up allowance too.
        first = None if self._stepped else max(self.timeout_s, comm.STARTUP_TIMEOUT_S)
        self._wait(self._pending, first)
        self._stepped = True
        self._wait_s += time.perf_counter() - self._start
        per_sim = self.sim_seconds.sum(1).flatten().cpu()  # (K,) this step's env.step seconds
        self._sim_s += float(per_sim.max())
        self._sim_each += per_sim
        self._steps += 1
        d = self.device
        aux = self.aux.to(d)
        info = {"reward_terms": {k: aux[:, j] for j, k in enumerate(REWARD_TERMS)},
                "success": aux[:, AUX.index("success")] > 0.5, "done": aux[:, AUX.index("done")] > 0.5,
                "episode_return": aux[:, AUX.index("episode_return")],
                "episode_length": aux[:, AUX.index("episode_length")].long(),
                "episode_success": aux[:, AUX.index("episode_success")] > 0.5,
                "physics_overflow": aux[:, AUX.index("physics_overflow")] > 0.5,
                "final_critic": self.final_critic.to(d)}
        return StepResult(self._obs(), self.reward.to(d), self.terminated.to(d), self.truncated.to(d), info)

    def step(self, action: torch.Tensor) -> StepResult:
        for g, rows in enumerate(self.group_rows):
            self.send_group(g, action[rows])
        return self.receive_groups()

    def state_dict(self) -> dict:
        self._send_all(CMD_STATE)
        return {"shards": [comm.recv_object(rank, self.timeout_s, "sim") for rank in self.sims]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shards"]) != len(self.sims):
            raise ValueError(f"checkpoint holds {len(state['shards'])} sim shards, this run has {len(self.sims)} sim ranks")
        self._send_all(CMD_LOAD)
        for rank, shard in zip(self.sims, state["shards"]):
            comm.send_object(shard, rank, self.timeout_s, "sim")

    def set_randomization(self, randomization, reward) -> None:
        self.cfg = replace(self.cfg, randomization=randomization, reward=reward)
        self._send_all(CMD_RANGES)
        for rank in self.sims:
            comm.send_object((randomization, reward), rank, self.timeout_s, "sim")

    def close(self) -> None:
        self._send_all(CMD_STOP)
