"""`dexrl eval`: success rate and episode return of a policy over K finished episodes."""

from __future__ import annotations

import torch
from tqdm import tqdm

from dexrl.config.env import EnvConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.play import frame, make_policy, video_path, write_video


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


Row = tuple[int, int, bool, bool, float, int]  # round, world, success (held), reached, return, length


class EpisodeTally:
    """Every world's first ``rounds`` episodes, as Rows."""

    def __init__(self, n: int, rounds: int):
        self.rounds, self.ended = rounds, [0] * n  # episodes each world has ended
        self.rows: list[Row] = []

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.rounds * len(self.ended)

    def record(self, done: torch.Tensor, held: torch.Tensor, reached: torch.Tensor, returns: torch.Tensor,
               lengths: torch.Tensor) -> int:
        """One step's ended episodes ((N,) each); returns how many were kept."""
        kept = 0
        for w in torch.nonzero(done).squeeze(-1).tolist():
            if self.ended[w] < self.rounds:
                self.rows.append((self.ended[w], w, bool(held[w]), bool(reached[w]), float(returns[w]),
                                  int(lengths[w])))
                kept += 1
            self.ended[w] += 1
        return kept

    def first(self, episodes: int) -> list[Row]:
        """Round by round, worlds in order within a round."""
        return sorted(self.rows)[:episodes]


def evaluate(cfg: EnvConfig, policy: str | None, episodes: int, checkpoint: dict | None = None,
             video: str | None = None) -> dict:
    """Every world's first ceil(episodes / worlds) episodes, the first ``episodes`` of them
    taken round by round (first episodes of worlds 0..N-1, then second ones, ...): taking
    whichever end first would favour short episodes, i.e. objects lost early. An episode
    succeeds as training's ``episode/success`` counts it: the object was in the success region
    (within 0.10 m of the goal) for the episode's last 2 s; ``reached_rate`` counts the
    episodes in which it entered the region at any time. ``video``: world 0's first episode."""
    out = video_path(video) if video is not None else None
    env = GraspEnv(cfg, third_person=out is not None)
    pol = CheckpointPolicy(env, checkpoint) if checkpoint is not None else make_policy(policy, env)
    obs = env.reset()
    tally = EpisodeTally(env.n, rounds=-(-episodes // env.n))
    reached = torch.zeros(env.n, dtype=torch.bool, device=env.device)
    frames = [frame(env)] if out is not None else []
    bar = tqdm(total=tally.rounds * env.n, desc="eval", unit="episode")
    while not tally.complete:
        r = env.step(pol.act(obs))
        obs = r.obs
        reached |= r.info["success"]
        done = r.info["done"]
        if out is not None and tally.ended[0] == 0 and not done[0]:  # (a done world shows its next episode)
            frames.append(frame(env))
        pol.reset(done)
        if done.any():
            bar.update(tally.record(done, r.info["episode_success"], reached, r.info["episode_return"],
                                    r.info["episode_length"]))
            reached[done] = False
    bar.close()
    if out is not None:
        write_video(out, frames[::2], 1.0 / (2 * cfg.ctrl_dt))
    successes, reached_any, returns, lengths = ([row[i] for row in tally.first(episodes)] for i in (2, 3, 4, 5))
    return {
        "policy": policy or "checkpoint", "objects": cfg.objects.mesh_dir or cfg.objects.split, "episodes": episodes,
        "num_envs": cfg.num_envs,
        "success_rate": sum(successes) / episodes, "reached_rate": sum(reached_any) / episodes,
        "mean_return": sum(returns) / episodes,
        "mean_length_s": sum(lengths) / episodes * cfg.ctrl_dt, "nonfinite_resets": int(env.nonfinite_resets),
    }
