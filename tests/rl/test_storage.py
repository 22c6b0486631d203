"""Rollout storage: predicted bytes == allocated bytes, compact depth, env-slice minibatches."""

import pytest
import torch

from dexrl.config.rl import ModelConfig, PPOConfig
from dexrl.models import ObsSpec, PolicyOutput
from dexrl.models.depth_codec import decode_depth, depth_to_uint16_mm, encode_depth, uint16_mm_to_depth
from dexrl.rl import RolloutStorage, bytes_per_env

DEPTH_SPEC = ObsSpec(action_dim=3, policy_vectors={"proprio": 5}, value_vectors={"critic": 7, "proprio": 5},
                     image_key="depth", image_shape=(1, 24, 32))
STATE_SPEC = ObsSpec(action_dim=2, policy_vectors={"state_teacher": 9}, value_vectors={"critic": 4})


def _allocated_bytes(storage) -> int:
    """Walk the object itself (not its own accounting) so a stray buffer would be counted."""
    total = 0
    for value in vars(storage).values():
        tensors = value.values() if isinstance(value, dict) else [value]
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


@pytest.mark.parametrize(
    "spec, model_cfg, ppo_cfg",
    [
        (DEPTH_SPEC, ModelConfig(lstm_hidden=16, lstm_layers=2), PPOConfig(num_steps=8, seq_length=4, num_minibatches=2)),
        (DEPTH_SPEC, ModelConfig(lstm_hidden=16, critic_kind="lstm", critic_lstm_hidden=8),
         PPOConfig(num_steps=8, seq_length=8, num_minibatches=2, image_dtype="uint16mm")),
        (STATE_SPEC, ModelConfig(actor_kind="mlp"), PPOConfig(num_steps=6, seq_length=3, num_minibatches=2)),
    ],
)
def test_bytes_per_env_equals_allocation(spec, model_cfg, ppo_cfg):
    n = 6
    storage = RolloutStorage(spec, model_cfg, ppo_cfg, n, "cpu")
    assert bytes_per_env(spec, model_cfg, ppo_cfg) * n == _allocated_bytes(storage)


def test_bytes_per_env_paper_depth_images():
    spec = ObsSpec(action_dim=11, policy_vectors={"proprio": 1}, value_vectors={"critic": 1},
                   image_key="depth", image_shape=(1, 120, 160))
    cfg = ModelConfig(actor_kind="mlp")
    image_bytes = 16 * 120 * 160 * 2  # T * H * W * 2 B = 614,400 B at 160x120, float16
    assert bytes_per_env(spec, cfg, PPOConfig()) - bytes_per_env(
        ObsSpec(action_dim=11, policy_vectors={"proprio": 1}, value_vectors={"critic": 1}), cfg, PPOConfig()) == image_bytes


def test_uint16_mm_round_trip():
    depth = torch.tensor([0.0, 0.1234, 1.5, 2.0004, 65.535, 0.1237, 0.0006, 70.0, -0.2])
    mm = depth_to_uint16_mm(depth)
    assert mm.dtype == torch.uint16
    # 123.4 -> 123; 2000.4 -> 2000; rounded to nearest, not cut: 123.7 -> 124, 0.6 -> 1;
    # 70 m and -0.2 m saturate at 65535 and 0
    assert mm.tolist() == [0, 123, 1500, 2000, 65535, 124, 1, 65535, 0]
    back = uint16_mm_to_depth(mm)
    assert back.dtype == torch.float32
    inside = slice(0, 7)
    assert (back[inside] - depth[inside]).abs().max().item() <= 0.5e-3 + 1e-6  # half a millimetre
    f16 = decode_depth(encode_depth(depth[:4], "float16"))
    torch.testing.assert_close(f16, depth[:4], rtol=1e-3, atol=0)
    # Encoding an encoded image changes nothing (uint16 read as metres would be x1000).
    assert torch.equal(encode_depth(mm, "uint16mm"), mm)
    assert encode_depth(encode_depth(depth, "float16"), "float16").dtype == torch.float16


# Every stored entry encodes (t, env) as code = 100 t + env, plus a per-field offset so that
# a field gathered from the wrong buffer shows; vector components add 0.25 * index.
OFFSET = {"log_probs": 0.0, "actions": 1000.0, "action_mean": 2000.0, "action_std": 3000.0, "values": 4000.0,
          "rewards": 5000.0, "advantages": 6000.0, "returns": 7000.0, "proprio": 8000.0, "critic": 9000.0}


def _enc(code, field, width=None):
    """code (...) -> code + OFFSET[field], or (..., width) with + 0.25 * component."""
    x = code + OFFSET[field]
    return x if width is None else x.unsqueeze(-1) + 0.25 * torch.arange(width, dtype=torch.float32)


def _reset_pattern(t, env):
    """Episodes end at (t + env) % 3 == 2, so the next step is a reset: (t + env) % 3 == 0."""
    return (t + env) % 3 == 0


def _fill(storage, T, N, A):
    """Fill through insert (and advantages / returns directly, as compute_returns would)."""
    envs = torch.arange(N)
    for t in range(T):
        c = envs.float() + 100 * t  # (N,)
        out = PolicyOutput(action=_enc(c, "actions", A), log_prob=_enc(c, "log_probs"), mean=_enc(c, "action_mean", A),
                           std=_enc(c, "action_std", A), value=_enc(c, "values"), state={})
        state = {k: c.view(1, N, 1).expand(v.shape[1], N, v.shape[3]).clone() for k, v in storage.states.items()}
        obs = {"depth": (c / 1000).view(N, 1, 1, 1).expand(N, 1, 24, 32), "proprio": _enc(c, "proprio", 5),
               "critic": _enc(c, "critic", 7)}
        done = (t + envs) % 3 == 2
        storage.insert(t, obs, _reset_pattern(t, envs), state, out, _enc(c, "rewards"), done & (envs % 2 == 0),
                       done & (envs % 2 == 1))
        storage.advantages[t] = _enc(c, "advantages")
        storage.returns[t] = _enc(c, "returns")


def test_minibatches_are_env_slices_cut_into_chunks():
    T, N, A, S = 8, 6, 3, 4
    ppo_cfg = PPOConfig(num_steps=T, seq_length=S, num_minibatches=3, image_dtype="uint16mm")
    storage = RolloutStorage(DEPTH_SPEC, ModelConfig(lstm_hidden=4, lstm_layers=1), ppo_cfg, N, "cpu")
    _fill(storage, T, N, A)
    assert 0 < storage.resets.sum().item() < T * N  # resets are neither all False nor all True
    seen = []
    for mb in storage.minibatches(3, torch.Generator().manual_seed(0)):
        K, n = T // S, N // 3
        assert mb.actions.shape == (S, K * n, A) and mb.obs["depth"].shape == (S, K * n, 1, 24, 32)
        assert mb.states["policy_h"].shape == (1, K * n, 4)
        codes = mb.log_probs  # (S, B) = 100 t + env
        envs = (codes % 100).long()
        times = (codes // 100).long()
        for b in range(K * n):
            assert (envs[:, b] == envs[0, b]).all()  # one env per column
            k = b // n
            assert times[:, b].tolist() == list(range(k * S, k * S + S))  # chunk k, consecutive steps
            # state at the chunk start is the one recorded at t = k * S for that env
            assert mb.states["policy_h"][0, b, 0].item() == 100 * k * S + envs[0, b].item()
        # every other field holds the same (t, env) as log_probs, entry by entry
        for field in ("values", "advantages", "returns"):
            assert torch.equal(getattr(mb, field), _enc(codes, field)), field
        for field in ("actions", "action_mean", "action_std"):
            assert torch.equal(getattr(mb, field), _enc(codes, field, A)), field
        assert torch.equal(mb.obs["proprio"], _enc(codes, "proprio", 5))
        assert torch.equal(mb.obs["critic"], _enc(codes, "critic", 7))
        assert mb.resets.dtype == torch.bool
        assert torch.equal(mb.resets, _reset_pattern(times, envs))
        assert mb.obs["depth"].dtype == torch.uint16  # compact until the encoder decodes it
        depth_m = decode_depth(mb.obs["depth"][:, :, 0, 0, 0])
        torch.testing.assert_close(depth_m, codes / 1000, atol=6e-4, rtol=0)  # mm precision
        seen += envs[0, :n].tolist()
    assert sorted(seen) == list(range(N))  # the slices partition the envs


def test_host_image_storage_splits_the_bytes():
    model_cfg = ModelConfig(lstm_hidden=16)
    device_cfg = PPOConfig(num_steps=8, seq_length=4, num_minibatches=2)
    host_cfg = PPOConfig(num_steps=8, seq_length=4, num_minibatches=2, image_storage="host")
    image = 8 * 24 * 32 * 2  # T * H * W * float16
    total = bytes_per_env(DEPTH_SPEC, model_cfg, device_cfg)
    assert bytes_per_env(DEPTH_SPEC, model_cfg, device_cfg, "host") == 0
    assert bytes_per_env(DEPTH_SPEC, model_cfg, host_cfg, "host") == image
    assert bytes_per_env(DEPTH_SPEC, model_cfg, host_cfg, "device") == total - image
    assert bytes_per_env(STATE_SPEC, ModelConfig(actor_kind="mlp"), PPOConfig(image_storage="host"), "host") == 0
    storage = RolloutStorage(DEPTH_SPEC, model_cfg, host_cfg, 4, "cpu")
    assert storage.obs["depth"].device == storage.image_device == torch.device("cpu")
    with pytest.raises(ValueError, match="where"):
        bytes_per_env(DEPTH_SPEC, model_cfg, host_cfg, "gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: host and learner device differ only there")
def test_host_image_storage_on_cuda_round_trips():
    cfg = PPOConfig(num_steps=4, seq_length=2, num_minibatches=2, image_storage="host")
    storage = RolloutStorage(DEPTH_SPEC, ModelConfig(lstm_hidden=16), cfg, 4, "cuda")
    assert storage.obs["depth"].is_pinned() and storage.actions.is_cuda
    _fill(storage, 4, 4, 3)
    mb = storage.gather(torch.tensor([2, 0]))
    assert mb.obs["depth"].is_cuda and mb.actions.is_cuda
    torch.testing.assert_close(mb.obs["depth"][:, 0].cpu(), storage.obs["depth"][:2, 2])


def test_select_moves_uint16_images_as_their_int16_bits():
    # CUDA's gather kernels have no unsigned dtypes; the bits must come back unchanged.
    from dexrl.models.depth_codec import select

    x = torch.tensor([[0, 1], [40000, 65535], [7, 32768]], dtype=torch.uint16)
    ids = torch.tensor([2, 1, 2])
    got = select(x, 0, ids)
    assert got.dtype == torch.uint16 and got.tolist() == [[7, 32768], [40000, 65535], [7, 32768]]
    f = torch.randn(3, 2).half()
    assert torch.equal(select(f, 1, torch.tensor([1, 0])), f[:, [1, 0]])
