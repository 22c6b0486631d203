"""What the update re-evaluates must be exactly what was collected: same log-probs, same
values, with recurrent states and resets inside chunks (the classic stale-state bugs)."""

import torch
from toy_tasks import CueMemory, collect

from dexrl.config.rl import ModelConfig, PPOConfig
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
