"""ActorCritic: shapes and key names, Gaussian math, act == evaluate, resets in sequences."""

import contextlib
import math

import pytest
import torch

from dexrl.config.rl import ModelConfig
from dexrl.models import ActorCritic, ObsSpec, gaussian_kl, gaussian_log_prob, recurrent_state_shapes
from dexrl.models.encoders import bf16_autocast

torch.set_num_threads(1)

# Key names are data: nothing in the model may assume 'depth' / 'proprio' / 'critic'.
SPEC = ObsSpec(action_dim=3, policy_vectors={"joints": 4}, value_vectors={"privileged": 6},
               image_key="cam", image_shape=(1, 24, 32))
SMALL = dict(lstm_hidden=16, lstm_layers=2, mlp=(16, 8), critic_mlp=(8,), critic_lstm_hidden=8)


def _obs(batch, steps=None, spec=SPEC, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = (batch,) if steps is None else (steps, batch)
    obs = {k: torch.randn(*lead, d, generator=g) for k, d in spec.vector_dims.items()}
    if spec.image_key is not None:
        obs[spec.image_key] = torch.rand(*lead, *spec.image_shape, generator=g) * 2.0
    return obs


def test_act_shapes_state_keys_and_deterministic_mode():
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL, critic_kind="lstm")
    model = ActorCritic(SPEC, cfg)
    state = model.initial_state(5, "cpu")
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "policy_h": (2, 5, 16), "policy_c": (2, 5, 16), "value_h": (1, 5, 8), "value_c": (1, 5, 8)}
    assert model.state_shapes() == recurrent_state_shapes(cfg)
    out = model.act(_obs(5), state, torch.ones(5, dtype=torch.bool))
    assert out.action.shape == (5, 3) and out.log_prob.shape == (5,) and out.value.shape == (5,)
    assert set(out.state) == set(state)
    det = model.act(_obs(5), state, torch.ones(5, dtype=torch.bool), deterministic=True, with_value=False)
    assert torch.equal(det.action, det.mean) and det.value is None
    # log N(mean; mean, sigma) = -sum(log sigma + log sqrt(2 pi)); sigma = exp(0) = 1 -> -3 * 0.9189
    torch.testing.assert_close(det.log_prob, torch.full((5,), -3 * 0.5 * math.log(2 * math.pi)))


@pytest.mark.parametrize("actor_kind", ["mlp", "lstm"])
def test_state_teacher_has_no_encoder(actor_kind):
    spec = ObsSpec(action_dim=2, policy_vectors={"state_teacher": 9}, value_vectors={"critic": 5})
    model = ActorCritic(spec, ModelConfig(**SMALL, actor_kind=actor_kind))
    assert model.encoder is None
    out = model.act(_obs(4, spec=spec), model.initial_state(4, "cpu"), torch.zeros(4, dtype=torch.bool))
    assert out.action.shape == (4, 2)
    assert set(out.state) == ({"policy_h", "policy_c"} if actor_kind == "lstm" else set())


def test_gaussian_math_matches_torch_distributions():
    torch.manual_seed(0)
    mean, log_std, a = torch.randn(4, 3), torch.randn(3) * 0.3, torch.randn(4, 3)
    ref = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(gaussian_log_prob(a, mean, log_std), ref.log_prob(a).sum(-1))
    mean_q, log_std_q = torch.randn(4, 3), torch.randn(3) * 0.3
    ref_q = torch.distributions.Normal(mean_q, log_std_q.exp())
    torch.testing.assert_close(gaussian_kl(mean, log_std, mean_q, log_std_q),
                               torch.distributions.kl_divergence(ref, ref_q).sum(-1))


def test_step_by_step_act_equals_sequence_evaluate_with_resets():
    torch.manual_seed(0)
    model = ActorCritic(SPEC, ModelConfig(**SMALL, critic_kind="lstm"))
    T, B = 5, 3
    obs = _obs(B, steps=T)
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[0] = True
    reset[2, 1] = reset[3, 0] = True
    state0 = model.initial_state(B, "cpu")
    state, log_probs, values, actions = state0, [], [], []
    for t in range(T):
        out = model.act({k: v[t] for k, v in obs.items()}, state, reset[t])
        state = out.state
        log_probs.append(out.log_prob), values.append(out.value), actions.append(out.action)
    ev = model.evaluate(obs, torch.stack(actions), state0, reset)
    torch.testing.assert_close(ev.log_prob, torch.stack(log_probs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.value, torch.stack(values), atol=1e-5, rtol=1e-5)


def test_evaluate_reset_mid_sequence_equals_fresh_start():
    torch.manual_seed(0)
    model = ActorCritic(SPEC, ModelConfig(**SMALL, critic_kind="lstm"))
    T, B, split = 6, 2, 3
    obs, actions = _obs(B, steps=T), torch.randn(T, B, 3)
    busy_state = {k: torch.randn_like(v) for k, v in model.initial_state(B, "cpu").items()}
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[split] = True
    full = model.evaluate(obs, actions, busy_state, reset)
    tail = model.evaluate({k: v[split:] for k, v in obs.items()}, actions[split:],
                          model.initial_state(B, "cpu"), torch.zeros(T - split, B, dtype=torch.bool))
    torch.testing.assert_close(full.log_prob[split:], tail.log_prob)
    torch.testing.assert_close(full.value[split:], tail.value)
    leaky = model.evaluate(obs, actions, busy_state, torch.zeros(T, B, dtype=torch.bool))
    assert not torch.allclose(leaky.log_prob[split:], tail.log_prob)  # the test can fail


def test_paper_sizes_parameter_count():
    spec = ObsSpec(action_dim=11, policy_vectors={"proprio": 10}, value_vectors={"critic": 20},
                   image_key="depth", image_shape=(1, 120, 160))
    model = ActorCritic(spec, ModelConfig())
    lstm = model.policy_trunk.core.lstm
    # layer 1: 4H(in + H) + 8H with in = 32 + 10, H = 1024 -> 4,374,528; layer 2: 4H(2H) + 8H -> 8,396,800
    assert sum(p.numel() for p in lstm.parameters()) == 4_374_528 + 8_396_800
    mlp = sum(p.numel() for p in model.policy_trunk.net.parameters())
    assert mlp == (1024 * 512 + 512) + (512 * 512 + 512) + (512 * 256 + 256)  # 512-512-256


def test_autocast_is_a_no_op_on_cpu():
    assert isinstance(bf16_autocast(torch.device("cpu"), True), contextlib.nullcontext)
