"""The disaggregated reply block: its column layout by hand, and a step packed and unpacked."""

import torch

from dexrl.envs.rewards import REWARD_TERMS
from dexrl.runtime.wire import AUX, pack_step, reply_columns, reply_width, step_bytes_per_world, unpack_step


def test_reply_columns_follow_the_vectors_then_the_step():
    cols = reply_columns({"proprio": 2, "critic": 3})
    # proprio 0:2, critic 2:5, reward 5, terminated 6, truncated 7, final critic 8:11, 10 statistics 11:21
    assert {k: (c.start, c.stop) for k, c in cols.items()} == {
        "proprio": (0, 2), "critic": (2, 5), "reward": (5, 6), "terminated": (6, 7), "truncated": (7, 8),
        "final_critic": (8, 11), "aux": (11, 21)}
    assert len(AUX) == len(REWARD_TERMS) + 6 == 10 and reply_width(cols) == 21
    # a 4x3 image of 2-byte pixels, 21 floats of reply and 2 of actions
    assert step_bytes_per_world(24, {"proprio": 2, "critic": 3}, 2) == 24 + 4 * 23


def test_a_step_packed_into_the_block_unpacks_to_the_same_fields():
    n, gen = 6, torch.Generator().manual_seed(0)
    flags = lambda: torch.tensor([True, False, True, True, False, False])[torch.randperm(n, generator=gen)]  # noqa: E731
    info = {"reward_terms": {k: torch.randn(n, generator=gen) for k in REWARD_TERMS}, "success": flags(),
            "done": flags(), "episode_return": torch.randn(n, generator=gen),
            "episode_length": torch.randint(0, 2**20, (n,), generator=gen), "episode_success": flags(),
            "physics_overflow": flags(), "final_critic": torch.randn(n, 3, generator=gen)}
    reward, terminated, truncated = torch.randn(n, generator=gen), flags(), flags()
    cols = reply_columns({"proprio": 2, "critic": 3})
    block = torch.full((n, reply_width(cols)), float("nan"))
    block[:, :5] = 0.0  # the observation vectors' columns are the caller's
    pack_step(block, cols, reward, terminated, truncated, info)
    assert not block.isnan().any()  # every column written
    got_reward, got_terminated, got_truncated, got = unpack_step({k: block[:, c] for k, c in cols.items()})
    assert got.keys() == info.keys() and got["reward_terms"].keys() == info["reward_terms"].keys()
    pairs = [(got_reward, reward), (got_terminated, terminated), (got_truncated, truncated),
             *((got["reward_terms"][k], v) for k, v in info["reward_terms"].items()),
             *((got[k], v) for k, v in info.items() if k != "reward_terms")]
    for a, b in pairs:
        assert a.dtype == b.dtype and torch.equal(a, b)
