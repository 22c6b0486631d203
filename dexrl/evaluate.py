"""`dexrl eval`: success rate and episode return of a policy over K finished episodes."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from dexrl.config.env import EnvConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.play import frame, make_policy, write_video


class CheckpointPolicy:
    """A trained policy acting deterministically; its recurrent state restarts with every
    episode (the reset flags zero it inside ``act``)."""

    def __init__(self, env: GraspEnv, payload: dict):
        from dexrl.config.train import TrainConfig, from_dict
        from dexrl.rl import build_actor_critic
        from dexrl.runtime.checkpoint import load_weights
        from dexrl.runtime.single import obs_spec

        cfg = from_dict(TrainConfig, payload["config"])
        self.spec = obs_spec(cfg, env.reset(), env.action_dim)
        self.model = build_actor_critic(self.spec, cfg.model, cfg.ppo, env.device)
        load_weights(self.model, payload["model"])
        self.model.eval()
        self.keys = tuple(self.spec.policy_vectors) + ((self.spec.image_key,) if self.spec.image_key else ())
        self.state = self.model.initial_state(env.n, env.device)
        self.reset_flags = torch.ones(env.n, dtype=torch.bool, device=env.device)

    def reset(self, done: torch.Tensor) -> None:
        self.reset_flags = done.clone()

    @torch.no_grad()
    def act(self, obs: dict) -> torch.Tensor:
        out = self.model.act({k: obs[k] for k in self.keys}, self.state, self.reset_flags,
                             deterministic=True, with_value=False)
        self.state = out.state
        self.reset_flags = torch.zeros_like(self.reset_flags)
        return out.action


def evaluate(cfg: EnvConfig, policy: str | None, episodes: int, checkpoint: dict | None = None,
             video: str | None = None) -> dict:
    """Run until ``episodes`` episodes have ended. An episode succeeds if the object entered
    the success region (within 0.10 m of the goal) at any time."""
    env = GraspEnv(cfg, third_person=video is not None)
    pol = CheckpointPolicy(env, checkpoint) if checkpoint is not None else make_policy(policy, env)
    obs = env.reset()
    reached = torch.zeros(env.n, dtype=torch.bool, device=env.device)
    successes, returns, lengths, frames = [], [], [], []
    bar = tqdm(total=episodes, desc="eval", unit="episode")
    while len(returns) < episodes:
        r = env.step(pol.act(obs))
        obs = r.obs
        if video is not None and len(returns) == 0:
            frames.append(frame(env))
        reached |= r.info["success"]
        done = r.info["done"]
        pol.reset(done)
        if done.any():
            idx = torch.nonzero(done).squeeze(-1)
            successes += reached[idx].tolist()
            returns += r.info["episode_return"][idx].tolist()
            lengths += r.info["episode_length"][idx].tolist()
            reached[idx] = False
            bar.update(min(len(idx), episodes - bar.n))
    bar.close()
    if video is not None:
        write_video(Path(video), frames[::2], 1.0 / (2 * cfg.ctrl_dt))
    successes, returns, lengths = successes[:episodes], returns[:episodes], lengths[:episodes]
    return {
        "policy": policy or "checkpoint", "objects": cfg.objects.mesh_dir or cfg.objects.split, "episodes": episodes,
        "num_envs": cfg.num_envs,
        "success_rate": sum(successes) / episodes, "mean_return": sum(returns) / episodes,
        "mean_length_s": sum(lengths) / episodes * cfg.ctrl_dt, "nonfinite_resets": int(env.nonfinite_resets),
    }
