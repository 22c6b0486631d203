"""`dexrl eval`: success rate and episode return of a policy over K finished episodes."""

from __future__ import annotations

import torch
from tqdm import tqdm

from dexrl.config.env import EnvConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.play import make_policy


def evaluate(cfg: EnvConfig, policy: str, episodes: int) -> dict:
    """Run until ``episodes`` episodes have ended. An episode succeeds if the object entered
    the success region (within 0.10 m of the goal) at any time."""
    env = GraspEnv(cfg)
    pol = make_policy(policy, env)
    env.reset()
    reached = torch.zeros(env.n, dtype=torch.bool, device=env.device)
    successes, returns, lengths = [], [], []
    bar = tqdm(total=episodes, desc="eval", unit="episode")
    while len(returns) < episodes:
        r = env.step(pol.act())
        reached |= r.info["success"]
        done = r.info["done"]
        if done.any():
            idx = torch.nonzero(done).squeeze(-1)
            successes += reached[idx].tolist()
            returns += r.info["episode_return"][idx].tolist()
            lengths += r.info["episode_length"][idx].tolist()
            reached[idx] = False
            pol.reset(done)
            bar.update(min(len(idx), episodes - bar.n))
    bar.close()
    successes, returns, lengths = successes[:episodes], returns[:episodes], lengths[:episodes]
    return {
        "policy": policy, "episodes": episodes, "num_envs": cfg.num_envs,
        "success_rate": sum(successes) / episodes, "mean_return": sum(returns) / episodes,
        "mean_length_s": sum(lengths) / episodes * cfg.ctrl_dt, "nonfinite_resets": int(env.nonfinite_resets),
    }
