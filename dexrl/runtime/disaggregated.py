"""Disaggregated simulation (the paper's Algorithms 1 and 2).

Sim ranks 0..K-1 hold only a GraspEnv over their slice of the worlds; the learner rank K
holds the policy, the rollout storage and PPO. Every step the learner sends each sim rank one
message, (command, world group, actions), and receives two into preallocated buffers: the
image (compact) and one float32 block with the observation vectors, reward, terminated,
truncated and episode statistics. Few large messages rather than many small ones: each costs
a round of the backend's protocol (a kernel launch under NCCL), and the sims wait for them.
All are non-blocking point-to-point calls. On the learner, ``RemoteEnvs`` stands in for a
GraspEnv, so the Collector and Trainer are the same code as in a single process.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from dexrl.config.train import TrainConfig
from dexrl.envs.grasp import GraspEnv, StepResult
from dexrl.models.depth_codec import encode_depth
from dexrl.runtime import comm
from dexrl.runtime.checkpoint import to_host
from dexrl.runtime.wire import pack_step, reply_columns, reply_width, unpack_step

CMD_STEP, CMD_STATE, CMD_LOAD, CMD_STOP, CMD_RANGES = 0, 1, 2, 3, 4


def wire_keys(cfg: TrainConfig) -> tuple[str, ...]:
    """Observation groups the learner needs, image first."""
    return ("depth", "proprio", "critic") if cfg.policy_input == "depth" else ("state_teacher", "critic")


def num_groups(cfg: TrainConfig) -> int:
    return 2 if cfg.pipeline else 1


def sim_env_config(cfg: TrainConfig, sim_index: int, device: str, group: int = 0):
    """Sim k holds worlds [k*n, (k+1)*n). Pipelined, world group g is [g*N/2, (g+1)*N/2) and
    sim k holds the k-th slice of n/2 worlds of each: every group is one contiguous slice of
    the rollout, which the learner records as soon as that group's step arrives."""
    from dexrl.runtime.single import adr_env_config

    per_group = cfg.env.num_envs // num_groups(cfg)
    m = per_group // cfg.sim_ranks
    return replace(adr_env_config(cfg), num_envs=m, world_offset=group * per_group + sim_index * m, device=device)


# ---- simulator rank (Algorithm 1) ----------------------------------------------------------
class SimRank:
    def __init__(self, cfg: TrainConfig, sim_index: int, learner: int, device: str):
        self.cfg, self.learner = cfg, learner
        # Until the learner's first step, then cfg.learner_timeout_s: before it the learner may
        # still be building its trainer and loading a checkpoint after sending ranges or state.
        self.timeout_s = comm.STARTUP_TIMEOUT_S
        self.envs = [GraspEnv(sim_env_config(cfg, sim_index, device, g)) for g in range(num_groups(cfg))]
        self.n, self.action_dim = self.envs[0].n, self.envs[0].action_dim  # per world group
        keys = wire_keys(cfg)
        self.image_key = keys[0] if keys[0] == "depth" else None
        self.vector_keys = tuple(k for k in keys if k != self.image_key)
        self.image_dtype = cfg.ppo.image_dtype
        self.wire = comm.wire_device()

    def _image(self, obs: dict) -> list[torch.Tensor]:
        return [encode_depth(obs[self.image_key], self.image_dtype).to(self.wire)] if self.image_key else []

    def _reply(self, obs: dict, res: StepResult | None = None, sim_s: float = 0.0) -> list[torch.Tensor]:
        """One world group's step as [image] + [float32 (n * V + 1,)]: the block (n, V) of
        ``reply_columns``, then env.step's seconds. The first observations carry no step."""
        block, c = self.reply[:-1].view(self.n, -1), self.columns  # (n, V)
        for key in self.vector_keys:
            block[:, c[key]].copy_(obs[key])
        if res is not None:
            pack_step(block, c, res.reward, res.terminated, res.truncated, res.info)
        self.reply[-1] = sim_s
        return self._image(obs) + [self.reply]

    def _send(self, tensors: list[torch.Tensor]) -> None:
        comm.wait(comm.isend(tensors, self.learner, "learner"), self.timeout_s, self.learner, "learner")

    def _recv(self, tensors: list[torch.Tensor]) -> None:
        comm.wait(comm.irecv(tensors, self.learner, "learner"), self.timeout_s, self.learner, "learner")

    def run(self) -> None:
        envs, learner = self.envs, self.learner
        first = [env.reset() for env in envs]
        widths = {k: first[0][k].shape[-1] for k in self.vector_keys}
        self.columns = reply_columns(widths)
        self.reply = torch.zeros(self.n * reply_width(self.columns) + 1, device=self.wire)  # sent, then reused
        image = [(self.image_key, tuple(t.shape), str(t.dtype)) for t in self._image(first[0])]
        comm.send_object({"num_envs": self.n * len(envs), "groups": len(envs), "action_dim": self.action_dim,
                          "image": image[0] if image else None, "vectors": widths}, learner, self.timeout_s, "learner")
        for obs in first:
            self._send(self._reply(obs))
        command = torch.zeros(2 + self.n * self.action_dim, device=self.wire)  # (command, world group, actions)
        while True:
            self._recv([command])
            cmd, group = int(command[0]), int(command[1])
            if cmd == CMD_STEP:
                self.timeout_s = self.cfg.learner_timeout_s
                env = envs[group]
                start = time.perf_counter()
                res = env.step(command[2:].view(self.n, self.action_dim).to(env.device))  # (the env clamps a copy)
                if env.device.type == "cuda":  # the step's kernels, not only their launches
                    torch.cuda.current_stream(env.device).synchronize()
                self._send(self._reply(res.obs, res, time.perf_counter() - start))
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
    """K sim ranks seen as one env of N worlds: sim k holds worlds [k*n, (k+1)*n), or, as two
    world groups, the k-th slice of each half (see sim_env_config). ``step`` moves every
    group; a pipelined Collector moves each group on its own (``send_group``,
    ``receive_group``)."""

    def __init__(self, cfg: TrainConfig, sim_ranks: list[int], device: torch.device, timeout_s: float):
        self.cfg, self.sims, self.device, self.timeout_s = cfg.env, sim_ranks, device, timeout_s
        self.wire = comm.wire_device()
        # Start-up (scene compilation, first kernel builds) may take minutes on a cold cache.
        hello = [comm.recv_object(r, max(timeout_s, comm.STARTUP_TIMEOUT_S), "sim") for r in sim_ranks]
        self.per_sim, self.groups = hello[0]["num_envs"], hello[0]["groups"]
        self.per_group = self.per_sim // self.groups  # worlds of one group on one sim
        self.n, self.action_dim = self.per_sim * len(sim_ranks), hello[0]["action_dim"]
        self.columns = reply_columns(hello[0]["vectors"])
        self.vector_keys = tuple(hello[0]["vectors"])
        self.image_key, self.image = None, None
        if hello[0]["image"] is not None:
            # One buffer for all N worlds; each (sim, group) receives straight into its rows. One
            # buffer, not two: the Collector records step t's images before it sends step t+1.
            self.image_key, shape, dtype = hello[0]["image"]
            dtypes = {str(t): t for t in (torch.float32, torch.float16, torch.uint16)}
            self.image = torch.empty((self.n, *shape[1:]), dtype=dtypes[dtype], device=self.wire)
        # Per (sim, group): the reply block (per_group * V) and that group's env.step seconds;
        # the command (command, group, per_group * A actions).
        self.replies = torch.zeros(len(sim_ranks), self.groups, self.per_group * reply_width(self.columns) + 1,
                                   device=self.wire)
        self.commands = torch.zeros(len(sim_ranks), self.groups, 2 + self.per_group * self.action_dim,
                                    device=self.wire)
        size = self.n // self.groups
        self.group_rows = [slice(g * size, (g + 1) * size) for g in range(self.groups)]  # each group's worlds
        self.bytes_per_step = sum(t.numel() * t.element_size() for t in (self.image, self.replies, self.commands)
                                  if t is not None)
        self._wait([(r, comm.irecv(self._reply_buffers(i, g), r, "sim"))
                    for i, r in enumerate(sim_ranks) for g in range(self.groups)])
        self.first_obs = self._obs(self._unpack())
        self._wait_s = self._sim_s = 0.0
        self._steps, self._sim_each = 0, torch.zeros(len(sim_ranks), dtype=torch.float64)  # (K,) env.step seconds
        self._sim_step = torch.zeros_like(self._sim_each)  # (K,) this step's, over the groups arrived so far
        self._pending: list[list] = [[] for _ in range(self.groups)]  # per group: (sim rank, request)
        self._stepped = [False] * self.groups

    def _rows(self, i: int, g: int = 0) -> slice:
        """Sim i's worlds of group g (global ids)."""
        start = self.group_rows[g].start + i * self.per_group
        return slice(start, start + self.per_group)

    def _reply_buffers(self, i: int, g: int) -> list[torch.Tensor]:
        return ([self.image[self._rows(i, g)]] if self.image is not None else []) + [self.replies[i, g]]

    def _unpack(self, group: int | None = None) -> dict[str, torch.Tensor]:
        """Each column group of the replies as an (n, width) tensor of its own on the learner
        device, rows in world order: all N worlds, or one group's (a copy: in the replies the
        columns interleave)."""
        block = self.replies[..., :-1].unflatten(-1, (self.per_group, -1))  # (K, groups, per_group, V)
        block = block.transpose(0, 1) if group is None else block[:, group]  # (groups, K, ...) or (K, ...)
        rows = self.n if group is None else self.n // self.groups
        return {key: block[..., cols].clone(memory_format=torch.contiguous_format).view(rows, -1).to(self.device)
                for key, cols in self.columns.items()}

    def _obs(self, fields: dict[str, torch.Tensor], rows: slice = slice(None)) -> dict[str, torch.Tensor]:
        obs = {k: fields[k] for k in self.vector_keys}
        if self.image is not None:  # compact, and valid until rows' next send (see Collector.collect)
            # Asynchronous only onto a GPU, whose stream orders the copy before its readers; a
            # copy into host memory (a CPU learner under NCCL) must land before the CPU reads it.
            obs[self.image_key] = self.image[rows].to(self.device, non_blocking=self.device.type == "cuda")
        return obs

    def _wait(self, works: list, timeout_s: float | None = None) -> None:
        """Wait for (sim rank, requests) pairs; a dead or silent sim raises RankFailure."""
        for rank, w in works:
            comm.wait(w, timeout_s or self.timeout_s, rank, "sim")

    def _send_all(self, cmd: int, group: int = 0, actions: torch.Tensor | None = None, wait: bool = True) -> list:
        """(command, group) to every sim, with its rows of ``actions`` ((N / groups, A), row
        order; a command without actions leaves the last ones, which the sim ignores)."""
        works = []
        for i, rank in enumerate(self.sims):
            message = self.commands[i, group]  # its last send completed: waited for in receive
            message[0], message[1] = cmd, group
            if actions is not None:
                message[2:].view(self.per_group, -1).copy_(actions[i * self.per_group:(i + 1) * self.per_group])
            works.append((rank, comm.isend([message], rank, "sim")))
        if wait:
            for rank, w in works:
                comm.wait(w, self.timeout_s, rank, "sim")
            return []
        return works

    def reset(self) -> dict[str, torch.Tensor]:
        """The sims reset once at start-up (Algorithm 1, line 2); this returns that observation."""
        return self.first_obs

    def pop_timings(self) -> dict[str, float]:
        """Since the last call: the slowest sim's env.step seconds ('sim'), the rest of the
        learner's wait for the sims ('transfer'; pipelined, the learner waits only for what
        the other group's inference did not hide, so this is mostly 0), bytes received and
        sent per step, and the sims' sim-only rate: the sum over sim ranks of worlds x steps /
        that rank's env.step seconds (what they would reach if they never waited for the
        learner)."""
        out = {"time/sim_s": self._sim_s, "time/transfer_s": max(self._wait_s - self._sim_s, 0.0),
               "transfer/bytes_per_step": float(self.bytes_per_step)}
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
        # Waited for in receive_group: the sims may still be busy with the other group.
        pending = self._send_all(CMD_STEP, group, actions, wait=False)
        self._pending[group] = pending + [(rank, comm.irecv(self._reply_buffers(i, group), rank, "sim"))
                                          for i, rank in enumerate(self.sims)]

    def send(self, action: torch.Tensor) -> None:
        """Start the sims on action (N, A), every world group."""
        for g, rows in enumerate(self.group_rows):
            self.send_group(g, action[rows])

    def _arrive(self, groups: range) -> None:
        """Wait for these groups' step results and count their sims' seconds."""
        start = time.perf_counter()
        for g in groups:
            # A sim's first step builds MuJoCo Warp's step kernels (a CUDA graph capture on a
            # GPU): minutes on a cold cache, so it has the start-up allowance too.
            self._wait(self._pending[g], None if self._stepped[g] else max(self.timeout_s, comm.STARTUP_TIMEOUT_S))
            self._pending[g], self._stepped[g] = [], True
        self._wait_s += time.perf_counter() - start
        self._sim_step += self.replies[:, list(groups), -1].sum(1).cpu().double()  # (K,) env.step seconds
        if groups[-1] == self.groups - 1:  # the step is complete
            self._sim_s += float(self._sim_step.max())
            self._sim_each += self._sim_step
            self._sim_step.zero_()
            self._steps += 1

    def receive(self) -> StepResult:
        """Every group's step results, gathered into one StepResult over all N worlds. All but
        the image are the learner's own; the image is valid until the next send."""
        self._arrive(range(self.groups))
        fields = self._unpack()
        return StepResult(self._obs(fields), *unpack_step(fields))

    def receive_group(self, group: int) -> StepResult:
        """Group ``group``'s step results, over its N / groups worlds (``group_rows[group]``);
        its image is valid until the group's next send."""
        self._arrive(range(group, group + 1))
        fields = self._unpack(group)
        return StepResult(self._obs(fields, self.group_rows[group]), *unpack_step(fields))

    def step(self, action: torch.Tensor) -> StepResult:
        self.send(action)
        return self.receive()

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
