"""What the update re-evaluates must be exactly what was collected: same log-probs, same
values, with recurrent states and resets inside chunks (the classic stale-state bugs)."""

import math

import torch
from toy_tasks import CueMemory, collect
from torch import nn

from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.models import ObsSpec, encoders
from dexrl.rl import PPO, RolloutStorage, build_actor_critic

torch.set_num_threads(1)  # tiny nets: threads only add contention (the other core is busy)


def test_evaluate_reproduces_collection_with_lstm_actor_and_critic():
    torch.manual_seed(0)
    env = CueMemory(8, seed=0, length=3)  # staggered, episode length 3: resets inside chunks
    model_cfg = ModelConfig(lstm_hidden=16, lstm_layers=2, mlp=(16,), critic_kind="lstm", critic_lstm_hidden=8, critic_mlp=(8,))
    ppo_cfg = PPOConfig(num_steps=8, seq_length=4, num_minibatches=2)
    model = build_actor_critic(env.spec, model_cfg, ppo_cfg, "cpu")
    storage = RolloutStorage(env.spec, model_cfg, ppo_cfg, env.n, "cpu")
    carry = (env.obs(), model.initial_state(env.n, "cpu"), torch.ones(env.n, dtype=torch.bool))
    # Two iterations: the second starts from carried (non-zero) states and updated normalizers.
    ppo = PPO(model, ppo_cfg, "cpu")
    for _ in range(2):
        carry = collect(env, model, storage, carry)
        assert storage.resets[1:].any()  # resets do fall inside the chunks
        with torch.no_grad():  # before compute_returns, which moves the value statistics
            for mb in storage.minibatches(2):
                ev = model.evaluate(mb.obs, mb.actions, mb.states, mb.resets)
                torch.testing.assert_close(ev.log_prob, mb.log_probs, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(model.value_normalizer.denormalize(ev.value), mb.values, atol=1e-5, rtol=1e-5)
        ppo.update(storage)


class DepthCue(CueMemory):
    """CueMemory with a 16x16 depth image of noise, for a model with an image encoder."""

    spec = ObsSpec(action_dim=1, policy_vectors={"proprio": 2}, value_vectors={"critic": 3},
                   image_key="depth", image_shape=(1, 16, 16))

    def obs(self) -> dict[str, torch.Tensor]:
        depth = 0.5 + 0.8 * torch.rand(self.n, 1, 16, 16, generator=self.gen)  # (N, 1, H, W) metres
        return {**super().obs(), "depth": depth}


def test_bf16_encoder_leaves_the_update_scoring_actions_as_collected(monkeypatch):
    """bf16 (CUDA's autocast; CPU's stands in here) lowers only the image encoder, when acting
    as when updating, so a one-step update starts at KL 0 and ratio 1 even at a small action
    std. A bf16 LSTM and heads in the update alone (as before) put the KL at 6e-5 here."""
    monkeypatch.setattr(encoders, "bf16_autocast",
                        lambda device, enabled: torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled))
    torch.manual_seed(0)
    env = DepthCue(8, seed=0, length=3)
    model_cfg = ModelConfig(encoder_channels=(4, 4, 4, 4), embed_dim=8, lstm_hidden=32, lstm_layers=2, mlp=(32,),
                            critic_mlp=(8,), init_log_std=math.log(0.05))
    ppo_cfg = PPOConfig(num_steps=8, seq_length=4, num_epochs=1, num_minibatches=1, bf16=True)
    model = build_actor_critic(env.spec, model_cfg, ppo_cfg, "cpu")
    nn.init.constant_(model.mean_head.bias, 0.5)  # means near 0.5, where a bf16 head rounds by ~2e-3
    image = env.obs()["depth"]
    with torch.no_grad():
        assert not torch.equal(model.encoder(image), _float32_encoding(model.encoder, image))  # bf16 did run
    storage = RolloutStorage(env.spec, model_cfg, ppo_cfg, env.n, "cpu")
    collect(env, model, storage, (env.obs(), model.initial_state(env.n, "cpu"), torch.ones(env.n, dtype=torch.bool)))
    metrics = PPO(model, ppo_cfg, "cpu").update(storage)  # one step: its KL and clipping are the start's
    assert metrics["ppo/kl"] < 1e-6 and metrics["ppo/clip_fraction"] == 0.0


def _float32_encoding(encoder, image: torch.Tensor) -> torch.Tensor:
    encoder.bf16 = False
    try:
        return encoder(image)
    finally:
        encoder.bf16 = True
