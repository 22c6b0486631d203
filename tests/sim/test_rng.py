"""Counter-based world RNG: the hash against Python integers, statistics, determinism, and the
property it exists for: one env of 4 worlds and two envs of 2 worlds (world_offset 0 and 2)
step bit-identically, world for world, under wide randomization and every noise source."""

import random

import pytest
import torch

from dexrl.config.env import CameraConfig, EnvConfig, RandomizationConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.sim.rng import Stream, WorldRNG, mix64, mix64_int
from dexrl.sim.objects import ObjectSetConfig


def test_mix64_wraps_like_unsigned_64_bit_integers():
    # splitmix64's published first output for seed 0 is mix64(0x9E3779B97F4A7C15) = 0xE220A8397B1DCDAF.
    assert mix64_int(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF
    rng = random.Random(0)
    xs = [rng.getrandbits(64) for _ in range(1000)] + [0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    signed = torch.tensor([x - (1 << 64) if x >= 1 << 63 else x for x in xs], dtype=torch.long)
    got = mix64(signed).tolist()
    assert [g & ((1 << 64) - 1) for g in got] == [mix64_int(x) for x in xs]


def test_uniform_normal_randint_statistics():
    draws = WorldRNG(0, torch.arange(10)).at(3)
    u = draws.uniform(Stream.RESET_FRICTION, (10_000,))  # (10, 10000): 100k values
    assert u.shape == (10, 10_000) and u.dtype == torch.float32 and u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005  # std of the mean: 0.289 / sqrt(1e5) = 0.0009
    assert abs(u.var().item() - 1 / 12) < 0.002
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.005
    torch.testing.assert_close(draws.uniform(Stream.RESET_FRICTION, (10_000,), -2.0, 3.0), -2.0 + 5.0 * u)
    z = draws.normal(Stream.STEP_DISTURB_DIR, (10_000,))
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert abs((z.abs() < 1).float().mean().item() - 0.6827) < 0.005  # P(|z| < 1)
    k = draws.randint(Stream.RESET_OBJECT, (10_000,), 7)
    assert k.min() == 0 and k.max() == 6
    assert ((torch.bincount(k.flatten(), minlength=7) / k.numel()) - 1 / 7).abs().max() < 0.005
    a, b, c = draws.uniforms(Stream.CAMERA_PIXEL, (10_000,), 3)  # three 21-bit fields of one hash
    for x in (a, b, c):
        assert abs(x.mean().item() - 0.5) < 0.005
    for x, y in ((a, b), (b, c), (a, c), (u, a)):
        assert abs(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1].item()) < 0.01
    # Consecutive counters and neighbouring worlds are uncorrelated too.
    nxt = WorldRNG(0, torch.arange(10)).at(4).uniform(Stream.RESET_FRICTION, (10_000,))
    assert abs(torch.corrcoef(torch.stack([u.flatten(), nxt.flatten()]))[0, 1].item()) < 0.01
    assert abs(torch.corrcoef(torch.stack([u[:-1].flatten(), u[1:].flatten()]))[0, 1].item()) < 0.01


def test_same_keys_same_numbers_any_batch():
    full = WorldRNG(7, torch.arange(6))
    part = WorldRNG(7, torch.tensor([4, 1]))
    counter = torch.tensor([0, 5, 2, 2, 9, 1])
    x = full.at(counter).uniform(Stream.RESET_MASS, (3, 2))
    assert x.shape == (6, 3, 2)
    assert torch.equal(x, WorldRNG(7, torch.arange(6)).at(counter).uniform(Stream.RESET_MASS, (3, 2)))
    assert torch.equal(part.at(counter[[4, 1]]).uniform(Stream.RESET_MASS, (3, 2)), x[[4, 1]])
    # An int counter is the same as a tensor of that value; tuples key every element.
    assert torch.equal(full.at(2).normal(Stream.RESET_SPAWN_AXIS, (3,)),
                       full.at(torch.full((6,), 2)).normal(Stream.RESET_SPAWN_AXIS, (3,)))
    pair = full.at((counter, counter + 1)).bits(Stream.STEP_OBS_NOISE, (4,))
    assert torch.equal(part.at((counter[[4, 1]], counter[[4, 1]] + 1)).bits(Stream.STEP_OBS_NOISE, (4,)), pair[[4, 1]])


def test_every_key_part_changes_the_numbers():
    ids = torch.arange(4)
    base = WorldRNG(0, ids).at(1).bits(Stream.RESET_FRICTION, (8,))  # (4, 8)
    others = [
        WorldRNG(1, ids).at(1).bits(Stream.RESET_FRICTION, (8,)),  # seed
        WorldRNG(0, ids + 4).at(1).bits(Stream.RESET_FRICTION, (8,)),  # world ids
        WorldRNG(0, ids).at(1).bits(Stream.RESET_GAINS, (8,)),  # stream
        WorldRNG(0, ids).at(2).bits(Stream.RESET_FRICTION, (8,)),  # counter
        WorldRNG(0, ids).at((1, 0)).bits(Stream.RESET_FRICTION, (8,)),  # an extra counter
        WorldRNG(0, ids).at((0, 1)).bits(Stream.RESET_FRICTION, (8,)),  # counters in another order
    ]
    for other in others:
        assert not (other == base).any()
    assert base.flatten().unique().numel() == 32  # worlds and elements differ from each other


def test_world_offset_must_be_non_negative():
    with pytest.raises(ValueError, match="world_offset must be >= 0"):
        EnvConfig(world_offset=-1)


WIDE = RandomizationConfig(
    friction=(0.5, 1.5), kp_scale=(0.5, 2.0), kd_scale=(0.5, 2.0), joint_friction_scale=(0.0, 2.0), mass_scale=(0.5, 3.0),
    disturbance_accel=20.0, spawn_width_m=(0.1, 0.1), spawn_tilt_rad=0.5, object_pos_noise_m=0.02, object_pos_bias_m=0.02,
    object_rot_noise=0.2, object_rot_bias=0.2, joint_pos_noise=0.05, joint_pos_bias=0.05, joint_vel_noise=0.2,
    joint_vel_bias=0.2, reset_joint_pos_noise=0.1, reset_joint_vel_noise=0.2)
NOISY_CAMERA = CameraConfig(width=16, height=12, dropout_prob=0.1, random_pixel_prob=0.05, correlated_noise_m=0.02)


def _env(num_envs: int, world_offset: int) -> GraspEnv:
    # 0.5 s episodes = 30 control steps: the objects land on the table (contacts) from step ~20,
    # every world truncates and auto-resets at step 30.
    return GraspEnv(EnvConfig(num_envs=num_envs, world_offset=world_offset, seed=3, episode_s=0.5, stereo_rgb=True,
                              camera=NOISY_CAMERA, randomization=WIDE, objects=ObjectSetConfig(num_objects=12)))


def _cat(*xs):
    if isinstance(xs[0], dict):
        return {k: _cat(*(x[k] for x in xs)) for k in xs[0]}
    return torch.cat(xs)


def _assert_same(whole, parts, what: str):
    if isinstance(whole, dict):
        assert whole.keys() == parts.keys(), what
        for k in whole:
            _assert_same(whole[k], parts[k], f"{what}/{k}")
        return
    if not torch.equal(whole, parts):
        rows = (whole != parts).reshape(whole.shape[0], -1).any(-1).nonzero().flatten().tolist()
        raise AssertionError(f"{what} differs in worlds {rows}")


@pytest.mark.parametrize("sizes", [(2, 2), (1, 3)])
def test_worlds_split_across_envs_step_bit_identically(sizes):
    offsets = [sum(sizes[:k]) for k in range(len(sizes))]
    whole, parts = _env(4, 0), [_env(n, off) for n, off in zip(sizes, offsets)]
    _assert_same(whole.reset(), _cat(*(p.reset() for p in parts)), "reset obs")
    gen = torch.Generator().manual_seed(0)
    ends = max_contacts = 0
    for t in range(40):
        action = torch.rand(4, whole.action_dim, generator=gen) * 2 - 1  # (4, A)
        out = whole.step(action)
        outs = [p.step(a) for p, a in zip(parts, action.split(sizes))]
        for name in ("obs", "reward", "terminated", "truncated"):
            _assert_same(getattr(out, name), _cat(*(getattr(o, name) for o in outs)), f"step {t} {name}")
        for name in ("final_critic", "episode_return", "episode_length"):
            _assert_same(out.info[name], _cat(*(o.info[name] for o in outs)), f"step {t} info/{name}")
        for name in ("disturb_force", "episode_count"):
            _assert_same(getattr(whole, name), _cat(*(getattr(p, name) for p in parts)), f"step {t} {name}")
        _assert_same(whole.physics.fields, _cat(*(p.physics.fields for p in parts)), f"step {t} fields")
        _assert_same(whole.physics.qvel, _cat(*(p.physics.qvel for p in parts)), f"step {t} qvel")
        ends += int((out.terminated | out.truncated).sum())
        max_contacts = max(max_contacts, int(whole.physics.data.nacon.numpy()[0]))
    assert ends >= 4 and (whole.episode_count >= 2).all()  # the initial reset and at least one auto-reset
    assert max_contacts > 0  # the physics compared includes contacts
    # The noise is on: depth has dropped and random pixels, observations differ from the truth.
    assert (out.obs["depth"] == 0).any()
    assert not torch.equal(out.obs["proprio"][:, :23], whole.joint_pos)
