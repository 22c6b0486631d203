"""The scripted grasp proves the physics can grasp: with DR off, at least half the worlds
bring their object into the success region within one episode."""

import torch

from dexrl.config.env import EnvConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.policies import ScriptedGrasp


def test_scripted_grasp_lifts_half_the_objects():
    # 16 worlds, seed 0: each draws an object from the default 64-object training set. The
    # lift ends 5.1 s into the episode, so 7 s episodes suffice. CPU runs are deterministic.
    env = GraspEnv(EnvConfig(num_envs=16, depth=False, episode_s=7.0, seed=0))
    policy = ScriptedGrasp(env)
    env.reset()
    reached = torch.zeros(16, dtype=torch.bool)
    for _ in range(env.cfg.max_episode_steps - 1):
        reached |= env.step(policy.act()).info["success"]
    assert reached.float().mean().item() >= 0.5, f"only {int(reached.sum())}/16 worlds lifted their object"
    assert int(env.nonfinite_resets) == 0
