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
from dexrl.rl import decode_depth, encode_depth
from dexrl.runtime import comm

CMD_STEP, CMD_STATE, CMD_LOAD, CMD_STOP, CMD_RANGES = 0, 1, 2, 3, 4
AUX = tuple(REWARD_TERMS) + ("success", "done", "episode_return", "episode_length", "episode_success")
# A sim rank waits this long for the learner's next command (the learner's PPO update runs
# in between) before deciding the learner is gone.
SIM_IDLE_TIMEOUT_S = 1800.0


def wire_keys(cfg: TrainConfig) -> tuple[str, ...]:
    """Observation groups the learner needs, image first."""
    return ("depth", "proprio", "critic") if cfg.policy_input == "depth" else ("state_teacher", "critic")


def sim_env_config(cfg: TrainConfig, sim_index: int, device: str):
    from dexrl.runtime.single import adr_env_config

    n = cfg.env.num_envs // cfg.sim_ranks
    return replace(adr_env_config(cfg), num_envs=n, world_offset=sim_index * n, device=device)


# ---- simulator rank (Algorithm 1) ----------------------------------------------------------
class SimRank:
    def __init__(self, cfg: TrainConfig, sim_index: int, learner: int, device: str):
        self.cfg, self.learner = cfg, learner
        self.env = GraspEnv(sim_env_config(cfg, sim_index, device))
        self.keys = wire_keys(cfg)
        self.image_dtype = cfg.ppo.image_dtype
        self.wire = torch.device("cuda", torch.cuda.current_device()) if comm.choose_backend(cfg.backend, device) == "nccl" else torch.device("cpu")

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
                           info["episode_success"].float()], dim=-1)  # (n, len(AUX))
        parts = [*self._obs_tensors(res.obs), res.reward, res.terminated, res.truncated, info["final_critic"], aux,
                 torch.tensor([sim_s], dtype=torch.float64)]
        return [p.to(self.wire) for p in parts]

    def run(self) -> None:
        env, learner = self.env, self.learner
        obs = env.reset()
        layout = [(k, tuple(t.shape), str(t.dtype)) for k, t in zip(self.keys, self._obs_tensors(obs))]
        comm.send_object({"num_envs": env.n, "action_dim": env.action_dim, "layout": layout}, learner)
        comm.wait(comm.isend(self._obs_tensors(obs), learner), SIM_IDLE_TIMEOUT_S, learner, "learner")
        header = torch.zeros(2, dtype=torch.int64, device=self.wire)
        actions = torch.zeros(env.n, env.action_dim, device=self.wire)
        while True:
            comm.wait(comm.irecv([header], learner), SIM_IDLE_TIMEOUT_S, learner, "learner")
            cmd = int(header[0])
            if cmd == CMD_STEP:
                comm.wait(comm.irecv([actions], learner), SIM_IDLE_TIMEOUT_S, learner, "learner")
                start = time.perf_counter()
                res = env.step(actions.to(env.device))
                sim_s = time.perf_counter() - start
                comm.wait(comm.isend(self._step_tensors(res, sim_s), learner), SIM_IDLE_TIMEOUT_S, learner, "learner")
            elif cmd == CMD_STATE:
                comm.send_object(env.state_dict(), learner)
            elif cmd == CMD_LOAD:
                env.load_state_dict(comm.recv_object(learner))
            elif cmd == CMD_RANGES:  # ADR moved: new randomization ranges and reward weights
                env.set_randomization(*comm.recv_object(learner))
            elif cmd == CMD_STOP:
                return


# ---- learner side (Algorithm 2): the sims as one batched env -------------------------------
class RemoteEnvs:
    """K sim ranks seen as one env of N worlds (sim k holds worlds [k*n, (k+1)*n))."""

    def __init__(self, cfg: TrainConfig, sim_ranks: list[int], device: torch.device, timeout_s: float):
        self.cfg, self.sims, self.device, self.timeout_s = cfg.env, sim_ranks, device, timeout_s
        self.wire = device if comm.choose_backend(cfg.backend, str(device)) == "nccl" else torch.device("cpu")
        hello = [comm.recv_object(r) for r in sim_ranks]
        self.per_sim = hello[0]["num_envs"]
        self.n, self.action_dim = self.per_sim * len(sim_ranks), hello[0]["action_dim"]
        layout = hello[0]["layout"]
        dtype = {str(t): t for t in (torch.float32, torch.float16, torch.uint16, torch.bool, torch.int64)}
        # One buffer per tensor for all N worlds; sim k receives straight into its rows. The
        # observations are double-buffered: the Collector still holds step t's while step
        # t+1's arrive.
        self.obs_bufs = [{k: torch.empty((self.n, *shape[1:]), dtype=dtype[dt], device=self.wire)
                          for k, shape, dt in layout} for _ in range(2)]
        self.obs_buf = self.obs_bufs[0]
        c = self.obs_buf["critic"].shape[1]
        self.reward = torch.empty(self.n, device=self.wire)
        self.terminated = torch.empty(self.n, dtype=torch.bool, device=self.wire)
        self.truncated = torch.empty(self.n, dtype=torch.bool, device=self.wire)
        self.final_critic = torch.empty(self.n, c, device=self.wire)
        self.aux = torch.empty(self.n, len(AUX), device=self.wire)
        self.sim_seconds = torch.zeros(len(sim_ranks), 1, dtype=torch.float64, device=self.wire)  # env.step seconds per sim
        self.header = torch.zeros(2, dtype=torch.int64, device=self.wire)
        self.bytes_per_step = sum(t.numel() * t.element_size() for t in self._step_buffers(slice(None)))
        self._recv([list(self._obs_rows(self._rows(i)).values()) for i in range(len(sim_ranks))])
        self.first_obs = self._obs()
        self._wait_s = self._sim_s = 0.0

    def _rows(self, i: int) -> slice:
        return slice(i * self.per_sim, (i + 1) * self.per_sim)

    def _obs_rows(self, rows: slice) -> dict[str, torch.Tensor]:
        return {k: v[rows] for k, v in self.obs_buf.items()}

    def _step_buffers(self, rows: slice) -> list[torch.Tensor]:
        return [*self._obs_rows(rows).values(), self.reward[rows], self.terminated[rows], self.truncated[rows],
                self.final_critic[rows], self.aux[rows]]

    def _recv(self, buffers: list[list[torch.Tensor]]) -> None:
        works = [(rank, comm.irecv(bufs, rank)) for rank, bufs in zip(self.sims, buffers)]
        for rank, w in works:
            comm.wait(w, self.timeout_s, rank, "sim")

    def _send_all(self, cmd: int, actions: torch.Tensor | None = None) -> None:
        self.header[0] = cmd
        works = []
        for i, rank in enumerate(self.sims):
            tensors = [self.header] + ([actions[self._rows(i)]] if actions is not None else [])
            works.append((rank, comm.isend(tensors, rank)))
        for rank, w in works:
            comm.wait(w, self.timeout_s, rank, "sim")

    def _obs(self) -> dict[str, torch.Tensor]:
        out = {k: v.to(self.device, non_blocking=True) for k, v in self.obs_buf.items()}
        if "depth" in out:
            out["depth"] = decode_depth(out["depth"])
        return out

    def reset(self) -> dict[str, torch.Tensor]:
        """The sims reset once at start-up (Algorithm 1, line 2); this returns that observation."""
        return self.first_obs

    def pop_timings(self) -> dict[str, float]:
        """Seconds since the last call: the slowest sim's env.step per step ('sim'), and the
        rest of the learner's wait for the sims ('transfer'); bytes received per step."""
        out = {"time/sim_s": self._sim_s, "time/transfer_s": max(self._wait_s - self._sim_s, 0.0),
               "transfer/bytes_per_step": float(self.bytes_per_step + self.n * self.action_dim * 4)}
        self._wait_s = self._sim_s = 0.0
        return out

    def step(self, action: torch.Tensor) -> StepResult:
        start = time.perf_counter()
        self.obs_buf = self.obs_bufs[1] if self.obs_buf is self.obs_bufs[0] else self.obs_bufs[0]
        self._send_all(CMD_STEP, action.to(self.wire, torch.float32).contiguous())
        self._recv([self._step_buffers(self._rows(i)) + [self.sim_seconds[i]] for i in range(len(self.sims))])
        self._wait_s += time.perf_counter() - start
        self._sim_s += float(self.sim_seconds.max())
        d = self.device
        aux = self.aux.to(d)
        info = {"reward_terms": {k: aux[:, j] for j, k in enumerate(REWARD_TERMS)},
                "success": aux[:, AUX.index("success")] > 0.5, "done": aux[:, AUX.index("done")] > 0.5,
                "episode_return": aux[:, AUX.index("episode_return")],
                "episode_length": aux[:, AUX.index("episode_length")].long(),
                "episode_success": aux[:, AUX.index("episode_success")] > 0.5,
                "final_critic": self.final_critic.to(d)}
        return StepResult(self._obs(), self.reward.to(d), self.terminated.to(d), self.truncated.to(d), info)

    def state_dict(self) -> dict:
        self._send_all(CMD_STATE)
        return {"shards": [comm.recv_object(rank) for rank in self.sims]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shards"]) != len(self.sims):
            raise ValueError(f"checkpoint holds {len(state['shards'])} sim shards, this run has {len(self.sims)} sim ranks")
        self._send_all(CMD_LOAD)
        for rank, shard in zip(self.sims, state["shards"]):
            comm.send_object(shard, rank)

    def set_randomization(self, randomization, reward) -> None:
        self.cfg = replace(self.cfg, randomization=randomization, reward=reward)
        self._send_all(CMD_RANGES)
        for rank in self.sims:
            comm.send_object((randomization, reward), rank)

    def close(self) -> None:
        self._send_all(CMD_STOP)
