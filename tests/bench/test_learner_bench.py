"""`dexrl bench learner` on a tiny network: keys, positive rates, storage bytes, a real update."""

import copy
import dataclasses
import json

import pytest

import torch

import dexrl.bench.learner as bench
from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.rl import bytes_per_env

torch.set_num_threads(1)

MODEL = ModelConfig(lstm_hidden=32, mlp=(32, 32), critic_mlp=(32, 32), encoder_channels=(4, 8, 8, 8))
PPO_CFG = PPOConfig(num_steps=4, seq_length=4, num_minibatches=2, num_epochs=1)
KEYS = {
    "device", "num_envs", "resolution", "num_steps", "num_epochs", "num_minibatches", "params",
    "update_s", "update_samples_per_s", "inference_s", "inference_steps_per_s",
    "storage_bytes", "storage_bytes_per_env", "peak_mem_bytes",
}


def test_learner_spec_matches_the_grasp_env_sizes():
    spec = bench.learner_spec(160, 120)
    assert spec.image_key == "depth" and spec.image_shape == (1, 120, 160)
    assert spec.policy_vectors == {"proprio": 69} and spec.value_vectors == {"critic": 135}
    assert spec.action_dim == 23


def test_a_presets_network_is_the_one_it_trains():
    from dexrl.config.train import preset

    # quickstart acts in the palm-synergy space: 6 palm + 5 synergies (GraspEnv: proprio 57, critic 123).
    quick = bench.preset_spec(preset("quickstart"))
    assert (quick.action_dim, quick.policy_vectors, quick.value_vectors) == (11, {"proprio": 57}, {"critic": 123})
    # teacher-state sees no image: proprio, noisy object pose and shape (64 + 23).
    state = bench.preset_spec(preset("teacher-state"))
    assert state.image_key is None and state.policy_vectors == {"state_teacher": 87}
    result = bench.bench_learner(32, 24, 4, MODEL, PPO_CFG, iterations=1, spec=state)
    assert result["resolution"] == "state" and result["image_dtype"] is None
    assert result["storage_bytes_per_env"] == bytes_per_env(state, MODEL, PPO_CFG)


def test_bench_learner_runs_a_real_update(monkeypatch):
    built, build = {}, bench.build_actor_critic

    def spy(*args, **kwargs):  # keep the model and its initial weights to compare afterwards
        built["model"] = model = build(*args, **kwargs)
        built["before"] = copy.deepcopy(model.state_dict())
        return model

    monkeypatch.setattr(bench, "build_actor_critic", spy)
    result = bench.bench_learner(32, 24, 4, MODEL, PPO_CFG, iterations=1)

    assert KEYS <= result.keys()
    json.loads(json.dumps(result))  # the CLI prints it as the last line
    assert result["update_samples_per_s"] > 0 and result["inference_steps_per_s"] > 0
    assert result["update_s"] > 0 and result["inference_s"] > 0
    # 4 envs x 4 steps / update_s, by definition
    assert abs(result["update_samples_per_s"] * result["update_s"] - 16) < 1e-6
    per_env = bytes_per_env(bench.learner_spec(32, 24), MODEL, PPO_CFG)
    assert result["storage_bytes_per_env"] == per_env and result["storage_bytes"] == 4 * per_env
    assert result["peak_mem_bytes"] is None  # CPU: no allocator peak to report
    assert result["params"] == sum(p.numel() for p in built["model"].parameters())
    after = built["model"].state_dict()
    changed = [k for k in after if "weight" in k and not torch.equal(after[k], built["before"][k])]
    assert changed, "no weight moved: ppo.update did not run"
    assert "32x24" in bench.format_table(result)


@pytest.mark.parametrize("image_dtype", ["float16", "uint16mm"])
def test_the_bench_policy_acts_on_the_pixels_its_update_replays(monkeypatch, image_dtype):
    """As in training (the Collector), model.act gets depth already in the storage's dtype, so
    the update's first ratio is 1 and act's timing includes decoding it."""
    seen, made, build, Storage = [], {}, bench.build_actor_critic, bench.RolloutStorage

    def spy_model(*args, **kwargs):
        model = build(*args, **kwargs)
        act = model.act
        model.act = lambda obs, *a: seen.append(obs["depth"].clone()) or act(obs, *a)
        return model

    def spy_storage(*args, **kwargs):
        made["storage"] = storage = Storage(*args, **kwargs)
        return storage

    monkeypatch.setattr(bench, "build_actor_critic", spy_model)
    monkeypatch.setattr(bench, "RolloutStorage", spy_storage)
    ppo_cfg = dataclasses.replace(PPO_CFG, image_dtype=image_dtype)
    bench.bench_learner(32, 24, 4, MODEL, ppo_cfg, iterations=1)
    stored = made["storage"].obs["depth"]  # (T, N, 1, H, W), the last rollout
    acted = torch.stack(seen[-PPO_CFG.num_steps:])  # what act saw in that rollout
    assert acted.dtype == stored.dtype and torch.equal(acted, stored)
