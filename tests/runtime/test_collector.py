"""Collector: the policy acts on the compact images the update scores, and a time-out
bootstraps from V of the episode's final observation, continuing from the state after acting.
The pipelined Collector records the same, each world group as its own step arrives."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.models import ObsSpec
from dexrl.rl import RolloutStorage, build_actor_critic
from dexrl.runtime.collector import Collector, PhaseTimer, PipelinedCollector

torch.set_num_threads(1)

SPEC = ObsSpec(action_dim=2, policy_vectors={"proprio": 3}, value_vectors={"critic": 4},
               image_key="depth", image_shape=(1, 16, 16))
PPO_CFG = PPOConfig(num_steps=8, seq_length=4, num_minibatches=1, image_dtype="uint16mm")
CPU = torch.device("cpu")


class RandomEnv:
    """Random depth (metres), proprio and critic observations; a third of the episodes end each
    step, half of those by time-out. The final critic observation of an ended episode is drawn
    far from any first one, so bootstrapping from the wrong one shows."""

    def __init__(self, n: int, seed: int):
        self.n, self.device, self.cfg = n, CPU, SimpleNamespace(ctrl_dt=1 / 60)
        self.gen = torch.Generator().manual_seed(seed)
        self.finals: list[torch.Tensor] = []  # (N, 4) each step

    def _rand(self, *shape):
        return torch.rand(*shape, generator=self.gen)

    def obs(self) -> dict[str, torch.Tensor]:
        return {"depth": 0.3 + 1.2 * self._rand(self.n, 1, 16, 16),  # (N, 1, H, W) metres, not whole mm
                "proprio": self._rand(self.n, 3), "critic": self._rand(self.n, 4)}

    def step(self, action: torch.Tensor):
        done = self._rand(self.n) < 0.35
        truncated = done & (self._rand(self.n) < 0.5)
        final = 10.0 + 3.0 * self._rand(self.n, 4)  # (N, 4)
        self.finals.append(final)
        none = torch.zeros(self.n, dtype=torch.bool)
        info = {"reward_terms": {}, "success": none, "physics_overflow": none, "done": done,
                "episode_return": torch.zeros(self.n), "episode_length": torch.zeros(self.n), "episode_success": none,
                "final_critic": final}
        return SimpleNamespace(obs=self.obs(), reward=action.sum(-1), terminated=done & ~truncated,
                               truncated=truncated, info=info)


class GroupedEnv:
    """Two RandomEnvs as the world groups [0, n/2) and [n/2, n) of one env, stepped a group at
    a time as a pipelined RemoteEnvs is; ``events`` logs each (send | receive, group, step)."""

    def __init__(self, n: int, seed: int):
        self.groups = [RandomEnv(n // 2, seed + g) for g in range(2)]
        self.n, self.device, self.cfg = n, CPU, SimpleNamespace(ctrl_dt=1 / 60)
        self.group_rows = [slice(0, n // 2), slice(n // 2, n)]
        self.events: list[tuple[str, int, int]] = []
        self._results: dict[int, SimpleNamespace] = {}

    @property
    def finals(self) -> list[torch.Tensor]:
        return [torch.cat(parts) for parts in zip(*(env.finals for env in self.groups))]

    def obs(self) -> dict[str, torch.Tensor]:
        parts = [env.obs() for env in self.groups]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def send_group(self, g: int, action: torch.Tensor) -> None:
        self.events.append(("send", g, len(self.groups[g].finals)))
        self._results[g] = self.groups[g].step(action)

    def receive_group(self, g: int):
        self.events.append(("receive", g, len(self.groups[g].finals) - 1))
        return self._results.pop(g)


def _collect(model_cfg: ModelConfig, n: int = 6, pipelined: bool = False):
    torch.manual_seed(0)
    env = GroupedEnv(n, seed=0) if pipelined else RandomEnv(n, seed=0)
    model = build_actor_critic(SPEC, model_cfg, PPO_CFG, CPU)
    nn.init.orthogonal_(model.mean_head.weight, gain=1.0)  # (0.01 by default hides what the images change)
    storage = RolloutStorage(SPEC, model_cfg, PPO_CFG, n, CPU)
    collector = (PipelinedCollector if pipelined else Collector)(env, model, SPEC, CPU, env.obs(),
                                                                 image_dtype=PPO_CFG.image_dtype)
    collector.collect(storage, PhaseTimer(CPU))
    return env, model, storage


PIPELINED = pytest.mark.parametrize("pipelined", [False, True], ids=["", "pipelined"])


@PIPELINED
def test_the_policy_acts_on_the_images_the_update_scores(pipelined):
    model_cfg = ModelConfig(encoder_channels=(4, 4, 4, 4), embed_dim=8, lstm_hidden=8, lstm_layers=1, mlp=(8,),
                            critic_mlp=(8,))
    _, model, storage = _collect(model_cfg, pipelined=pipelined)
    (mb,) = storage.minibatches(1)
    with torch.no_grad():
        ev = model.evaluate(mb.obs, mb.actions, mb.states, mb.resets)
    # Acting on float32 depth and scoring the stored whole millimetres differs by ~1e-4 here.
    torch.testing.assert_close(ev.log_prob, mb.log_probs, atol=1e-6, rtol=0)


@PIPELINED
@torch.no_grad()
def test_time_outs_bootstrap_from_the_final_observation_after_the_step(pipelined):
    model_cfg = ModelConfig(encoder_channels=(4, 4, 4, 4), embed_dim=8, lstm_hidden=8, lstm_layers=1, mlp=(8,),
                            critic_kind="lstm", critic_lstm_hidden=8, critic_mlp=(8,))
    env, model, storage = _collect(model_cfg, pipelined=pipelined)
    assert storage.truncated.any() and storage.terminated.any()
    state, reset = model.initial_state(env.n, CPU), torch.ones(env.n, dtype=torch.bool)
    for t in range(PPO_CFG.num_steps):  # replay the rollout: the states after each step
        out = model.act({k: v[t] for k, v in storage.obs.items()}, state, reset)
        torch.testing.assert_close(out.value, storage.values[t], atol=1e-6, rtol=0)
        final_value = model.value({"critic": env.finals[t]}, out.state)  # (N,)
        assert not torch.allclose(final_value, out.value, atol=1e-3)  # the two sources differ
        expected = torch.where(storage.truncated[t], final_value, out.value)
        torch.testing.assert_close(storage.truncated_values[t], expected, atol=1e-6, rtol=0)
        state, reset = out.state, storage.terminated[t] | storage.truncated[t]


def test_a_pipelined_group_steps_again_before_the_other_group_arrives():
    """No barrier between the groups: group 0's step t + 1 is sent as soon as its step t is
    back, before group 1's step t is received, so the sims never wait for both groups."""
    model_cfg = ModelConfig(encoder_channels=(4, 4, 4, 4), embed_dim=8, lstm_hidden=8, lstm_layers=1, mlp=(8,),
                            critic_mlp=(8,))
    env, _, storage = _collect(model_cfg, pipelined=True)
    T = PPO_CFG.num_steps
    want = [("send", 0, 0), ("send", 1, 0)]
    for t in range(1, T):
        want += [("receive", 0, t - 1), ("send", 0, t), ("receive", 1, t - 1), ("send", 1, t)]
    want += [("receive", 0, T - 1), ("receive", 1, T - 1)]
    assert env.events == want
    # Each group's rows hold its own worlds' steps: rewards are the sums of the actions sent.
    torch.testing.assert_close(storage.rewards, storage.actions.sum(-1))
    assert not torch.equal(storage.rewards[:, :3], storage.rewards[:, 3:])
