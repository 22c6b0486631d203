"""The training loop: one Collector (env + inference) and one learner (storage + PPO)."""

from __future__ import annotations

import copy
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from dexrl import adr
from dexrl.config.train import TrainConfig, to_dict
from dexrl.envs.grasp import GraspEnv
from dexrl.models import ActorCritic, ObsSpec
from dexrl.rl import PPO, DistributedHooks, RolloutStorage, build_actor_critic
from dexrl.runtime.checkpoint import load_weights, save_checkpoint, set_aside_later, to_host
from dexrl.runtime.collector import Collector, PhaseTimer, PipelinedCollector
from dexrl.runtime.comm import RankFailure
from dexrl.runtime.logger import RunLogger


class Interrupted(Exception):
    """Ctrl-C stopped a single-process run at an iteration's end, after saving it."""

    def __init__(self, iteration: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted: iteration {iteration} saved to {checkpoint}")
        self.iteration, self.checkpoint = iteration, checkpoint


class _StopAtIterationEnd:
    """Ctrl-C in a single-process run (main thread) asks to stop once the iteration ends, so
    that it can be saved whole; a second Ctrl-C stops at once. Elsewhere: nothing changes
    (launched ranks are stopped by their launcher). `restore` puts the old handler back."""

    def __init__(self, enabled: bool) -> None:
        self.asked = False
        self._old = None
        if enabled and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._ask)

    def _ask(self, signum, frame) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        print("\ndexrl train: stopping after this iteration (Ctrl-C again to stop now)", file=sys.stderr)

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def adr_env_config(cfg: TrainConfig):
    """The env config with the ADR mode's initial ranges, so the very first episodes use them."""
    if cfg.adr == "off":
        return cfg.env
    r, w = adr.apply(adr.initial_state(cfg.adr), cfg.env.randomization, cfg.env.reward)
    return replace(cfg.env, randomization=r, reward=w)


def obs_spec(cfg: TrainConfig, obs: dict[str, torch.Tensor], action_dim: int) -> ObsSpec:
    """The actor's and critic's inputs, sized from a real observation."""
    critic = {"critic": obs["critic"].shape[-1]}
    if cfg.policy_input == "state":
        return ObsSpec(action_dim, policy_vectors={"state_teacher": obs["state_teacher"].shape[-1]}, value_vectors=critic)
    return ObsSpec(action_dim, policy_vectors={"proprio": obs["proprio"].shape[-1]}, value_vectors=critic,
                   image_key="depth", image_shape=tuple(obs["depth"].shape[1:]))


@dataclass
class Trainer:
    """The parts of a run, built once; ``train`` is the loop. The same class serves every
    runtime: single process (a GraspEnv), a data-parallel rank (its slice of worlds, hooks
    that all-reduce), or the disaggregated learner (RemoteEnvs standing in for the sims).

    With ``cfg.overlap_update`` the next rollout is collected, on a second thread and into a
    second storage, while PPO updates on the last one: the collector acts with a copy of the
    parameters taken before the update (a one-iteration policy lag; PPO's ratio is taken
    against the log-probabilities the rollout was collected with, the learning rate's KL
    against the parameters at the update's start: PPO.rebase_kl)."""

    cfg: TrainConfig
    env: object  # GraspEnv or RemoteEnvs: reset(), step(), state_dict(), n, device, cfg
    model: ActorCritic
    ppo: PPO
    storage: RolloutStorage
    collector: Collector
    device: torch.device
    rank: int = 0
    is_logger: bool = True  # writes the run directory and the main checkpoint
    stats_reduce: object = None  # callable: per-rank stats dict -> mean over ranks
    agree: object = None  # callable: this rank's ADR proposal (bool) -> the decision all ranks take
    spare: RolloutStorage | None = None  # overlap_update: the storage the next rollout fills
    adr_state: adr.ADRState = field(default_factory=adr.ADRState)
    iteration: int = 0
    env_steps: int = 0

    def __post_init__(self):
        self.adr_state = adr.initial_state(self.cfg.adr)
        self._apply_adr()
        self._ahead: dict | None = None  # overlap_update: statistics of the rollout collected ahead
        self._full_checkpoint: int | None = None  # iteration of the last checkpoint with env state
        self._before_update: dict | None = None  # see _snapshot
        self._thread: ThreadPoolExecutor | None = None  # overlap_update: the collector thread, while training
        # The sims' results arrive on the collector's own CUDA stream, so inference and
        # transfer overlap the update's kernels (a local env's Warp kernels keep their stream).
        remote = not isinstance(self.env, GraspEnv)
        overlap = self.spare is not None
        self._stream = torch.cuda.Stream(self.device) if overlap and remote and self.device.type == "cuda" else None

    def _apply_adr(self) -> None:
        if self.cfg.adr != "off":
            self.env.set_randomization(*adr.apply(self.adr_state, self.cfg.env.randomization, self.cfg.env.reward))

    def _step_adr(self, stats: dict) -> None:
        """One ADR decision per iteration from this rollout's success and resets."""
        proposal = adr.propose(self.adr_state, stats["success_rate"], stats["episodes"])
        agreed = self.agree(proposal) if self.agree is not None else proposal
        new = adr.update(self.adr_state, stats["episodes"], agreed, self.cfg.adr)
        moved = new.level != self.adr_state.level
        self.adr_state = new
        if moved:
            self._apply_adr()

    @classmethod
    def build(cls, cfg: TrainConfig, env=None, device: torch.device | None = None, hooks: DistributedHooks | None = None,
              rank: int = 0, is_logger: bool = True, stats_reduce=None, after_init=None, agree=None) -> "Trainer":
        torch.manual_seed(cfg.seed)
        env = env if env is not None else GraspEnv(adr_env_config(cfg))
        device = device if device is not None else env.device
        first_obs = env.reset()
        spec = obs_spec(cfg, first_obs, env.action_dim)
        model = build_actor_critic(spec, cfg.model, cfg.ppo, device)
        if after_init is not None:
            after_init(model)  # e.g. broadcast the initial parameters
        ppo = PPO(model, cfg.ppo, device, cfg.max_iterations, seed=cfg.seed + rank, hooks=hooks)
        storage = RolloutStorage(spec, cfg.model, cfg.ppo, env.n, device)
        spare = RolloutStorage(spec, cfg.model, cfg.ppo, env.n, device) if cfg.overlap_update else None
        # overlap_update: the collector acts with its own copy of the parameters (see Trainer).
        actor = copy.deepcopy(model).requires_grad_(False) if cfg.overlap_update else model
        collector_cls = PipelinedCollector if getattr(env, "groups", 1) > 1 else Collector
        collector = collector_cls(env, actor, spec, device, first_obs, cfg.ppo.image_dtype)
        torch.manual_seed(cfg.seed + 1 + rank)  # exploration noise: distinct per rank, reproducible
        return cls(cfg, env, model, ppo, storage, collector, device, rank, is_logger, stats_reduce, agree, spare)

    # ---- checkpoints ------------------------------------------------------------------
    def state_dict(self, with_env: bool = True) -> dict:
        state = {
            "iteration": self.iteration, "env_steps": self.env_steps, "model": self.model.state_dict(),
            "ppo": self.ppo.state_dict(), "torch_rng": torch.get_rng_state(),
            # This rank's GPU only: a run resumed on fewer GPUs must still load it.
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "env": None, "collector": None, "adr": vars(self.adr_state).copy(),
        }
        if with_env:
            state.update(env=self.env.state_dict(), collector=self.collector.state_dict())
        return state

    def load_state_dict(self, payload: dict) -> None:
        load_weights(self.model, payload["model"])
        self.ppo.load_state_dict(payload["ppo"])
        if payload.get("env") is not None:  # a checkpoint written after a rank failure has none
            self.env.load_state_dict(payload["env"])
            self.collector.load_state_dict(payload["collector"])
        self.iteration, self.env_steps = payload["iteration"], payload["env_steps"]
        if "torch_rng" in payload:
            torch.set_rng_state(payload["torch_rng"])
            if payload.get("cuda_rng") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(payload["cuda_rng"], self.device)
        else:  # another rank's or layout's checkpoint (without_episodes): noise and minibatch
            # order of this rank's own (rank 0's would shuffle every rank's minibatches alike)
            torch.manual_seed(hash((self.cfg.seed, self.rank, self.iteration)) & 0xFFFF_FFFF)
            self.ppo.generator.manual_seed(hash((self.cfg.seed, self.rank, self.iteration, 1)) & 0xFFFF_FFFF)
        self._full_checkpoint = self.iteration if payload.get("env") is not None else None
        if "adr" in payload and self.cfg.adr == "on":  # 'max' (e.g. resumed so) stays terminal
            self.adr_state = adr.ADRState(**payload["adr"])
            self._apply_adr()

    def checkpoint_path(self, run_dir: Path) -> Path:
        """The main checkpoint (logger rank) or this rank's shard of environment state."""
        name = f"iter_{self.iteration:06d}" + ("" if self.is_logger else f".rank{self.rank}")
        return Path(run_dir) / "checkpoints" / f"{name}.pt"

    def _snapshot(self) -> dict | None:
        """Multi-process logger rank: the weights, optimizer and ADR state of the last finished
        iteration, in host memory, kept while the update runs. A peer's failure (a collective
        that fails, the launcher's stop signal) can stop the update half way; the failure
        checkpoint must not hold half an update under the last iteration's name."""
        if self.cfg.runtime == "single" or not self.is_logger:
            return None
        return {"iteration": self.iteration, "env_steps": self.env_steps, "adr": vars(self.adr_state).copy(),
                **to_host({"model": self.model.state_dict(), "ppo": self.ppo.state_dict()})}

    def _whole_state(self) -> dict:
        """state_dict(with_env=False) as of the last finished iteration."""
        state, before = self.state_dict(with_env=False), self._before_update
        if before is not None and before["iteration"] == self.iteration:  # stopped inside the update
            state.update(before)
        return state

    def save(self, run_dir: Path, with_env: bool = True) -> Path:
        payload = self.state_dict(with_env) if with_env else self._whole_state()
        if self.is_logger:
            payload["config"] = to_dict(self.cfg)
        path = save_checkpoint(self.checkpoint_path(run_dir), payload)
        self._full_checkpoint = self.iteration if with_env else None
        return path

    # ---- the loop ---------------------------------------------------------------------
    def train(self, run_dir: Path, progress: bool = True) -> Path:
        """collect -> returns -> update -> log -> save, until max_iterations."""
        cfg, n = self.cfg, self.cfg.env.num_envs
        if self.is_logger:
            aside = set_aside_later(run_dir, self.iteration)
            if aside is not None:
                print(f"dexrl train: resumed at iteration {self.iteration}: the later checkpoints moved to {aside}",
                      file=sys.stderr)
        logger = RunLogger(run_dir, cfg, self.iteration) if self.is_logger else None
        bar = tqdm(total=cfg.max_iterations, initial=self.iteration, desc="train", unit="it",
                   disable=not (progress and self.is_logger))
        warned_overflow = not self.is_logger
        abandon = False  # a failure or a second Ctrl-C: do not wait for a rollout in flight
        self.collector.stop.clear()
        stop = _StopAtIterationEnd(cfg.runtime == "single")
        try:
            while self.iteration < cfg.max_iterations:
                row = self._iteration(n)
                if logger is not None:
                    logger.log(row)
                bar.set_postfix({"steps/s": f"{row['env_steps_per_s']:.0f}", "success": f"{row['success_rate']:.2f}",
                                 "adr": f"{row['adr_progress']:.2f}",
                                 **{k.split('/')[1]: f"{v:.3f}" for k, v in row.items() if k.startswith("reward/")}})
                bar.update(1)
                if row.get("physics/overflow", 0.0) > 0 and not warned_overflow:
                    warned_overflow = True
                    bar.write(f"dexrl train: warning: MuJoCo Warp dropped contacts in {row['physics/overflow']:.2%} "
                              "of world-steps (buffers full); raise env.naccdmax_per_world, env.nconmax_per_world "
                              "or env.njmax_per_world (metric physics/overflow)", file=sys.stderr)
                asked = stop.asked  # read once: a Ctrl-C between the two checks must not skip the save
                if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.max_iterations or asked:
                    path = self.save(run_dir)
                if asked and self.iteration < cfg.max_iterations:
                    raise Interrupted(self.iteration, path)
        except RankFailure:
            # A peer is gone: keep what this rank can still vouch for (the weights, the optimizer
            # and ADR as of the last finished iteration), then report; a full checkpoint of
            # that iteration, with the environment's state, is better still.
            abandon = True
            if self.is_logger and self._full_checkpoint != self.iteration:
                self.save(run_dir, with_env=False)
            raise
        except KeyboardInterrupt:
            abandon = True
            raise
        finally:
            if abandon:  # first: a rollout in flight ends at its next step, not after the rollout
                self.collector.stop.set()
            stop.restore()
            bar.close()
            if logger is not None:
                logger.close()
            if self._thread is not None:  # after a failure, not waiting for a rollout that may hang
                self._thread.shutdown(wait=not abandon, cancel_futures=True)
                self._thread = None
        return Path(run_dir)

    def _collect(self, storage: RolloutStorage) -> tuple[dict, dict]:
        """One rollout into ``storage``: (its statistics, seconds per phase)."""
        timer = PhaseTimer(self.device, self._stream)
        if self._stream is None:
            return self.collector.collect(storage, timer), timer.seconds
        with torch.cuda.stream(self._stream):
            return self.collector.collect(storage, timer), timer.seconds

    def _reduce(self, stats: dict) -> dict:
        """Statistics averaged over data-parallel ranks: on the main thread only, so every
        rank issues its collectives in the same order."""
        return self.stats_reduce(stats) if self.stats_reduce is not None else stats

    def _start_next_rollout(self) -> Future | None:
        """overlap_update: collect the next rollout on the collector thread with the current
        parameters. The last iteration does so too (a rollout left untrained), so that every
        iteration is the same work and its time an honest rate."""
        if self.spare is None:
            return None
        self._refresh_actor()
        if self._thread is None:
            cuda = self.device.type == "cuda"  # the thread's allocations go to this rank's GPU
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="dexrl-collect",
                                              initializer=torch.cuda.set_device if cuda else None,
                                              initargs=(self.device,) if cuda else ())
        return self._thread.submit(self._collect, self.spare)

    def _refresh_actor(self) -> None:
        """overlap_update: the collector's copy of the parameters := the current ones. On the
        main thread, before the update is queued: the collector's own stream then reads the
        copy only once made, and does not wait for the update."""
        if self.collector.model is not self.model:
            self.collector.model.load_state_dict(self.model.state_dict())
        if self._stream is not None:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))

    def _iteration(self, n: int) -> dict:
        cfg = self.cfg
        start = time.perf_counter()
        if self._ahead is None:  # no rollout collected ahead: always, unless overlap_update
            self._refresh_actor()  # (after a resume it would still hold the initial parameters)
            stats, seconds = self._collect(self.storage)
            stats = self._reduce(stats)
        else:  # collected during the last iteration
            stats, seconds, self._ahead = self._ahead, {}, None
        self._before_update = self._snapshot()  # before this iteration's ADR step too
        self._step_adr(stats)  # between rollouts: the env is idle
        upcoming = self._start_next_rollout()
        if self.spare is not None:  # the rollout came from the policy before the last update
            self.ppo.rebase_kl(self.storage)
        losses = self.ppo.update(self.storage)
        self.env_steps += cfg.ppo.num_steps * n
        self.iteration += 1  # last: from here on the snapshot is stale (see _whole_state)
        if upcoming is not None:
            ahead, ahead_seconds = upcoming.result()  # a failed peer raises RankFailure here
            if self._stream is not None:
                torch.cuda.current_stream(self.device).wait_stream(self._stream)
            self._ahead = self._reduce(ahead)
            self.storage, self.spare = self.spare, self.storage
            for key, value in ahead_seconds.items():  # the phases that ran during this iteration
                seconds[key] = seconds.get(key, 0.0) + value
        elapsed = time.perf_counter() - start
        return {"iteration": self.iteration - 1, "env_steps": self.env_steps,
                "env_steps_per_s": cfg.ppo.num_steps * n / elapsed, **stats, **adr.metrics(self.adr_state), **losses,
                **{f"time/{k}_s": v for k, v in seconds.items()}, "time/iteration_s": elapsed}
