"""PPO.update on the depth model: metrics, hooks, KL 0 on the first step, exact resume."""

import copy
import math

import pytest
import torch
from toy_tasks import collect

from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.models import ObsSpec
from dexrl.rl import PPO, DistributedHooks, RolloutStorage, build_actor_critic

torch.set_num_threads(1)

SPEC = ObsSpec(action_dim=2, policy_vectors={"proprio": 3}, value_vectors={"critic": 4},
               image_key="depth", image_shape=(1, 16, 16))
MODEL = ModelConfig(lstm_hidden=8, lstm_layers=1, mlp=(8,), critic_mlp=(8,), encoder_channels=(4, 4, 4, 4))


class RandomDepthEnv:
    """Random observations and rewards; episodes end at random. Enough to drive the update."""

    spec = SPEC

    def __init__(self, n, seed):
        self.n, self.gen = n, torch.Generator().manual_seed(seed)

    def obs(self):
        return {"depth": torch.rand(self.n, 1, 16, 16, generator=self.gen) * 3.0,
                "proprio": torch.randn(self.n, 3, generator=self.gen) * 10 + 5,
                "critic": torch.randn(self.n, 4, generator=self.gen)}

    def step(self, action):
        done = torch.rand(self.n, generator=self.gen) < 0.2
        return self.obs(), action.sum(-1), done & (torch.rand(self.n, generator=self.gen) < 0.5), done


def _setup(ppo_cfg, seed=0, n=4):
    torch.manual_seed(seed)
    env = RandomDepthEnv(n, seed)
    model = build_actor_critic(SPEC, MODEL, ppo_cfg, "cpu")
    storage = RolloutStorage(SPEC, MODEL, ppo_cfg, n, "cpu")
    carry = (env.obs(), model.initial_state(n, "cpu"), torch.ones(n, dtype=torch.bool))
    return env, model, storage, carry


def test_update_metrics_hooks_and_first_step_kl():
    cfg = PPOConfig(num_steps=4, seq_length=2, num_minibatches=2, num_epochs=2, image_dtype="uint16mm", lr=1e-3)
    env, model, storage, carry = _setup(cfg)
    calls = {"grads": 0, "mean": [], "moments": 0}

    def moments(count, mean, m2):
        calls["moments"] += 1
        return count, mean, m2

    hooks = DistributedHooks(grads=lambda ps: calls.__setitem__("grads", calls["grads"] + 1),
                             mean=lambda x: calls["mean"].append(x.clone()) or x * 0 + 7.0, moments=moments)
    ppo = PPO(model, cfg, "cpu", hooks=hooks)
    before = copy.deepcopy(model.state_dict())
    collect(env, model, storage, carry)
    metrics = ppo.update(storage)
    for key in ("loss/policy", "loss/value", "loss/entropy", "loss/bounds", "loss/total", "ppo/kl",
                "ppo/clip_fraction", "ppo/grad_norm", "ppo/lr", "time/update_s"):
        assert key in metrics and math.isfinite(metrics[key])  # present, not NaN or inf
    assert calls["grads"] == 4  # 2 epochs x 2 minibatches
    assert calls["moments"] == 2 + 2  # returns and advantages once; obs 'proprio' and 'critic' after the update
    assert calls["mean"][0].item() == pytest.approx(0.0, abs=1e-6)  # first step: new policy == old policy
    # 4 steps' KL, then the logged means in one call: those of this rank's minibatches, which
    # the run logs as the hook returns them (here 7).
    assert len(calls["mean"]) == 4 + 1 and calls["mean"][-1].shape == (len(calls["mean"][-1]),)
    assert metrics["loss/policy"] == metrics["ppo/returns_mean"] == metrics["ppo/clip_fraction"] == 7.0
    assert not torch.equal(before["log_std"], model.state_dict()["log_std"])
    # obs statistics refreshed from the raw rollout (proprio ~ N(5, 10^2))
    assert 0.0 < model.obs_normalizer.norms["proprio"].mean.mean().item() < 10.0


def test_resume_is_bitwise_exact():
    cfg = PPOConfig(num_steps=4, seq_length=4, num_minibatches=2, num_epochs=2, lr=1e-3)
    env, model, storage, carry = _setup(cfg)
    ppo = PPO(model, cfg, "cpu", seed=3)
    collect(env, model, storage, carry)
    ppo.update(storage)
    saved_model, saved_ppo = copy.deepcopy(model.state_dict()), copy.deepcopy(ppo.state_dict())
    ppo.update(storage)  # straight on

    _, model2, _, _ = _setup(cfg, seed=1)
    model2.load_state_dict(saved_model)
    ppo2 = PPO(model2, cfg, "cpu", seed=99)
    ppo2.load_state_dict(saved_ppo)
    # storage already holds the rollout; recompute from the same stored data
    ppo2.update(storage)
    for key, value in model.state_dict().items():
        assert torch.equal(value, model2.state_dict()[key]), key


def test_linear_schedule_needs_max_iterations():
    cfg = PPOConfig(schedule="linear")
    model = build_actor_critic(SPEC, MODEL, cfg, "cpu")
    with pytest.raises(ValueError, match="max_iterations"):
        PPO(model, cfg, "cpu")
    ppo = PPO(model, cfg, "cpu", max_iterations=10)
    assert ppo.lr == cfg.lr


def test_linear_schedule_inside_update():
    # update() sets lr from the iteration index BEFORE incrementing it:
    #   1st update: iteration 0 -> 1e-3 * (1 - 0/10) = 1e-3
    #   2nd update: iteration 1 -> 1e-3 * (1 - 1/10) = 9e-4
    cfg = PPOConfig(schedule="linear", num_steps=4, seq_length=4, num_minibatches=2, num_epochs=1, lr=1e-3)
    env, model, storage, carry = _setup(cfg)
    collect(env, model, storage, carry)
    ppo = PPO(model, cfg, "cpu", max_iterations=10)
    lrs = []
    for _ in range(2):
        metrics = ppo.update(storage)
        # the optimizer steps with the scheduled lr (and no KL rule moves it in 'linear')
        assert [g["lr"] for g in ppo.optimizer.param_groups] == [ppo.lr]
        assert metrics["ppo/lr"] == ppo.lr
        lrs.append(ppo.lr)
    assert lrs[0] == pytest.approx(1e-3, rel=1e-12)
    assert lrs[1] == pytest.approx(cfg.lr * (1 - 1 / 10), rel=1e-12)  # 9e-4
    assert ppo.iteration == 2


def test_microbatches_give_the_same_update_with_less_memory():
    from dexrl.bench.capacity import torch_peak_bytes

    results = {}
    for micro in (0, 3):  # 6 envs per minibatch: whole, or micro-batches of 3 + 3
        cfg = PPOConfig(num_steps=4, seq_length=2, num_minibatches=2, num_epochs=2, lr=1e-3, microbatch_envs=micro)
        env, model, storage, carry = _setup(cfg, n=12)
        collect(env, model, storage, carry)
        ppo = PPO(model, cfg, "cpu", seed=5)
        peak, metrics = torch_peak_bytes(lambda: ppo.update(storage), torch.device("cpu"))
        results[micro] = (peak, metrics, model.state_dict())
    (peak0, m0, p0), (peak3, m3, p3) = results[0], results[3]
    for key, value in p0.items():
        torch.testing.assert_close(p3[key], value, rtol=1e-4, atol=1e-6, msg=key)
    for key in ("loss/total", "loss/policy", "loss/value", "ppo/kl", "ppo/clip_fraction", "ppo/lr"):
        assert m3[key] == pytest.approx(m0[key], rel=1e-4, abs=1e-7), key
    assert not torch.equal(p3["log_std"], torch.zeros_like(p3["log_std"]))  # the update moved it
    assert peak3 < 0.8 * peak0  # half the samples' activations live at a time


def test_uneven_microbatches_weight_by_share():
    # 4 envs per minibatch in micro-batches of 3 + 1: weights 3/4 and 1/4, same step as whole.
    # Adam would hide a wrong overall scale, so compare the accumulated gradients themselves.
    grads = []
    for micro in (0, 3):
        cfg = PPOConfig(num_steps=4, seq_length=4, num_minibatches=1, num_epochs=1, lr=1e-3, microbatch_envs=micro)
        env, model, storage, carry = _setup(cfg, seed=2)
        collect(env, model, storage, carry)
        hooks = DistributedHooks(grads=lambda ps: grads.append([p.grad.clone() for p in ps]))
        PPO(model, cfg, "cpu", hooks=hooks).update(storage)
    assert len(grads) == 2
    for whole, micro in zip(*grads):
        torch.testing.assert_close(micro, whole, rtol=1e-4, atol=1e-7)


def test_rebase_kl_measures_from_the_current_parameters():
    cfg = PPOConfig(num_steps=4, seq_length=2, num_minibatches=2, num_epochs=1, lr=1e-2, microbatch_envs=2)
    env, model, storage, carry = _setup(cfg, n=6)
    collect(env, model, storage, carry)
    recorded = storage.action_mean.clone(), storage.action_std.clone(), storage.log_probs.clone()
    ppo = PPO(model, cfg, "cpu", seed=1)
    # Same parameters that collected: rebasing reproduces what acting recorded.
    ppo.rebase_kl(storage)
    torch.testing.assert_close(storage.action_mean, recorded[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(storage.action_std, recorded[1])
    # After an update the rollout is one policy behind: rebasing moves the reference to the
    # new means (what a fresh evaluation gives), and the collection log-probs stay.
    ppo.update(storage)
    ppo.rebase_kl(storage)
    assert not torch.allclose(storage.action_mean, recorded[0], atol=1e-4)
    assert torch.equal(storage.log_probs, recorded[2])
    mb = storage.gather(torch.tensor([4, 1]))
    with torch.no_grad():
        ev = model.evaluate(mb.obs, mb.actions, mb.states, mb.resets)
    torch.testing.assert_close(mb.action_mean, ev.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mb.action_std, ev.log_std.exp().expand_as(ev.mean))


def _one_step(cfg, kl=None, seed=0):
    """One update of one gradient step; `kl` replaces the (rank-averaged) KL the step sees.
    Returns the PPO, the parameters before, the gradients before clipping and the metrics."""
    env, model, storage, carry = _setup(cfg, seed=seed)
    collect(env, model, storage, carry)
    grads = []
    hooks = DistributedHooks(grads=lambda ps: grads.append([p.grad.clone() for p in ps]),
                             mean=None if kl is None else (lambda x: torch.full_like(x, kl)))
    ppo = PPO(model, cfg, "cpu", hooks=hooks)
    before = [p.detach().clone() for p in ppo.params]
    metrics = ppo.update(storage)
    return ppo, before, grads[0], metrics


@pytest.mark.parametrize("schedule, kl, lr", [
    ("adaptive", 1.0, 1e-3 / 1.5),  # KL 1 > 2 x 0.016: lr / 1.5
    ("adaptive", 0.0, 1e-3 * 1.5),  # KL 0 < 0.016 / 2: lr x 1.5
    ("fixed", 1.0, 1e-3),  # no rule moves it
])
def test_the_step_uses_the_kl_rule_on_the_rank_averaged_kl_before_stepping(schedule, kl, lr):
    cfg = PPOConfig(num_steps=4, seq_length=4, num_minibatches=1, num_epochs=1, lr=1e-3, schedule=schedule,
                    max_grad_norm=0.0)
    ppo, before, _, metrics = _one_step(cfg, kl=kl)
    assert ppo.lr == pytest.approx(lr, rel=1e-12) and metrics["ppo/lr"] == ppo.lr
    # Adam's first step moves each parameter with a gradient by lr * g / |g| = lr: the new lr
    # was set before the step.
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(ppo.params, before))
    assert moved == pytest.approx(lr, rel=1e-3)


def test_gradients_are_clipped_to_max_grad_norm_and_the_norm_before_is_logged():
    cfg = PPOConfig(num_steps=4, seq_length=4, num_minibatches=1, num_epochs=1, lr=1e-3, max_grad_norm=1e-3)
    ppo, _, grads, metrics = _one_step(cfg)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    assert norm > 1e-2 and metrics["ppo/grad_norm"] == pytest.approx(norm, rel=1e-5)
    # Adam's first moment after one step is (1 - beta1) x the gradient it stepped with: the
    # gradient scaled to norm max_grad_norm.
    for p, g in zip(ppo.params, grads):
        torch.testing.assert_close(ppo.optimizer.state[p]["exp_avg"], 0.1 * g * (1e-3 / norm), rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("value_clip", [0.0, 0.2])
def test_value_loss_compares_normalized_values_with_normalized_returns(value_clip):
    # loss/value = mean((V - R)^2), or with the clip mean(max((V - R)^2, (V_old + clamp(V - V_old)
    # - R)^2)), where R and V_old are the stored returns and values normalized with the
    # statistics compute_returns fitted to this rollout's returns, and V comes from the
    # parameters before the step.
    cfg = PPOConfig(num_steps=4, seq_length=4, num_minibatches=1, num_epochs=1, lr=1e-3, value_clip=value_clip)
    env, model, storage, carry = _setup(cfg, seed=4)
    collect(env, model, storage, carry)
    reference = copy.deepcopy(model)
    metrics = PPO(model, cfg, "cpu").update(storage)
    vn = model.value_normalizer
    assert vn.count.item() == 16 and abs(vn.mean.mean().item()) > 0.1  # far from the identity
    mb = storage.gather(torch.arange(4))
    with torch.no_grad():
        value = reference.evaluate(mb.obs, mb.actions, mb.states, mb.resets).value
    returns, old = vn.normalize(mb.returns), vn.normalize(mb.values)
    error = (value - returns).square()
    if value_clip:
        error = torch.max(error, (old + (value - old).clamp(-value_clip, value_clip) - returns).square())
        assert not torch.allclose(error, (value - returns).square())  # the clip matters here
    assert metrics["loss/value"] == pytest.approx(error.mean().item(), rel=1e-5)
