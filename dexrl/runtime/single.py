"""Single-process training: one Collector (env + inference) and one learner (storage + PPO)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dexrl.config.train import TrainConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.models import ActorCritic, ObsSpec
from dexrl.rl import PPO, RolloutStorage, build_actor_critic
from dexrl.runtime.checkpoint import save_checkpoint
from dexrl.runtime.collector import Collector, PhaseTimer
from dexrl.runtime.logger import RunLogger


def obs_spec(cfg: TrainConfig, obs: dict[str, torch.Tensor], action_dim: int) -> ObsSpec:
    """The actor's and critic's inputs, sized from a real observation."""
    critic = {"critic": obs["critic"].shape[-1]}
    if cfg.policy_input == "state":
        return ObsSpec(action_dim, policy_vectors={"state_teacher": obs["state_teacher"].shape[-1]}, value_vectors=critic)
    return ObsSpec(action_dim, policy_vectors={"proprio": obs["proprio"].shape[-1]}, value_vectors=critic,
                   image_key="depth", image_shape=tuple(obs["depth"].shape[1:]))


@dataclass
class Trainer:
    """The parts of a run, built once; ``train`` is the loop."""

    cfg: TrainConfig
    env: GraspEnv
    model: ActorCritic
    ppo: PPO
    storage: RolloutStorage
    collector: Collector
    device: torch.device
    iteration: int = 0
    env_steps: int = 0

    @classmethod
    def build(cls, cfg: TrainConfig) -> "Trainer":
        torch.manual_seed(cfg.seed)
        env = GraspEnv(cfg.env)
        device = env.device  # single process: the learner shares the sim device
        spec = obs_spec(cfg, env.reset(), env.action_dim)
        model = build_actor_critic(spec, cfg.model, cfg.ppo, device)
        ppo = PPO(model, cfg.ppo, device, cfg.max_iterations, seed=cfg.seed)
        storage = RolloutStorage(spec, cfg.model, cfg.ppo, cfg.env.num_envs, device)
        return cls(cfg, env, model, ppo, storage, Collector(env, model, spec, device), device)

    # ---- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration, "env_steps": self.env_steps, "model": self.model.state_dict(),
            "ppo": self.ppo.state_dict(), "collector": self.collector.state_dict(), "env": self.env.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }

    def load_state_dict(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.ppo.load_state_dict(payload["ppo"])
        self.env.load_state_dict(payload["env"])
        self.collector.load_state_dict(payload["collector"])
        torch.set_rng_state(payload["torch_rng"])
        if payload.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        self.iteration, self.env_steps = payload["iteration"], payload["env_steps"]

    def save(self, run_dir: Path) -> Path:
        from dexrl.config.train import to_dict

        path = Path(run_dir) / "checkpoints" / f"iter_{self.iteration:06d}.pt"
        return save_checkpoint(path, {"config": to_dict(self.cfg), **self.state_dict()})

    # ---- the loop ---------------------------------------------------------------------
    def train(self, run_dir: Path, progress: bool = True) -> Path:
        """collect -> returns -> update -> log -> save, until max_iterations."""
        cfg, n = self.cfg, self.cfg.env.num_envs
        logger = RunLogger(run_dir, cfg, self.iteration)
        bar = tqdm(total=cfg.max_iterations, initial=self.iteration, desc="train", unit="it", disable=not progress)
        try:
            while self.iteration < cfg.max_iterations:
                start = time.perf_counter()
                timer = PhaseTimer(self.device)
                stats = self.collector.collect(self.storage, timer)
                losses = self.ppo.update(self.storage)
                self.iteration += 1
                self.env_steps += cfg.ppo.num_steps * n
                seconds = time.perf_counter() - start
                row = {"iteration": self.iteration - 1, "env_steps": self.env_steps,
                       "env_steps_per_s": cfg.ppo.num_steps * n / seconds, **stats, **losses,
                       **{f"time/{k}_s": v for k, v in timer.seconds.items()}, "time/iteration_s": seconds}
                logger.log(row)
                bar.set_postfix({"steps/s": f"{row['env_steps_per_s']:.0f}", "success": f"{stats['success_rate']:.2f}",
                                 **{k.split('/')[1]: f"{v:.3f}" for k, v in stats.items() if k.startswith("reward/")}})
                bar.update(1)
                if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.max_iterations:
                    self.save(run_dir)
        finally:
            bar.close()
            logger.close()
        return Path(run_dir)
