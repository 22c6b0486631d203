"""ADR: the update rule by hand, range interpolation, rank agreement, checkpoints, --adr max."""

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dexrl import adr
from dexrl.config.env import RandomizationConfig, RewardConfig
from dexrl.runtime import comm


def test_update_needs_success_of_at_least_the_threshold_and_3000_resets():
    s = adr.ADRState()
    # success 0.39 is below 0.4: no increment, the 5000 resets accumulate.
    assert not adr.propose(s, 0.39, 5000)
    s = adr.update(s, 5000, agreed=False)
    assert (s.level, s.resets_since_change) == (0, 5000)
    # 0.40 ("at least 0.4", the paper) with 5000 + 0 >= 3000 resets: increment, the counter restarts.
    assert adr.propose(s, 0.40, 0)
    s = adr.update(s, 0, agreed=True)
    assert (s.level, s.resets_since_change) == (1, 0)
    # 2000 resets: too few since the change; 2000 + 1000 = 3000 is enough.
    assert not adr.propose(s, 0.9, 2000)
    s = adr.update(s, 2000, agreed=False)
    assert adr.propose(s, 0.9, 1000)


def test_levels_never_shrink_and_stop_at_50():
    s = adr.ADRState()
    for _ in range(60):
        s = adr.update(s, 3000, agreed=adr.propose(s, 0.5, 3000))
        s = adr.update(s, 3000, agreed=adr.propose(s, 0.0, 3000))  # failure never lowers it
    assert s.level == adr.NUM_STEPS == 50 and s.full and s.progress == 1.0
    assert not adr.propose(s, 1.0, 10**6)


def test_off_and_max_never_move():
    assert adr.initial_state("max") == adr.ADRState(level=50) and adr.initial_state("off") == adr.ADRState()
    # From a level below full, an agreed increment and 5000 resets change nothing: the "on"
    # rule would give level 11 (agreed) or count the resets (not agreed).
    for mode in ("max", "off"):
        for agreed in (True, False):
            assert adr.update(adr.ADRState(level=10), 5000, agreed, mode=mode) == adr.ADRState(level=10)
    with pytest.raises(ValueError, match="adr must be one of"):
        adr.initial_state("maximum")


def test_ranges_interpolate_linearly():
    r, w = adr.apply(adr.ADRState(level=25), RandomizationConfig(), RewardConfig())
    # Halfway (25 / 50): friction (1, 1) -> (0.5, 1.2) gives (0.75, 1.1); mass (1, 1) -> (0.5, 3)
    # gives (0.75, 2.0); disturbance 0 -> 10 gives 5; sharpness -15 -> -20 gives -17.5; lift
    # weight 5 -> 0 gives 2.5; curl -0.01 -> -0.005 gives -0.0075.
    assert r.friction == pytest.approx((0.75, 1.1)) and r.mass_scale == pytest.approx((0.75, 2.0))
    assert r.disturbance_accel == pytest.approx(5.0) and r.reset_joint_pos_noise == pytest.approx(0.175)
    assert w.object_to_goal_sharpness == pytest.approx(-17.5) and w.lift_weight == pytest.approx(2.5)
    assert w.finger_curl_weight == pytest.approx(-0.0075)
    r0, _ = adr.apply(adr.ADRState(level=0), RandomizationConfig(), RewardConfig())
    assert r0 == RandomizationConfig()  # the start values are the env's defaults
    m = adr.metrics(adr.ADRState(level=25))
    assert m["adr_progress"] == 0.5 and m["adr_full"] == 0.0 and m["adr_param/kp_scale"] == 0.5
    assert m["adr_level"] == 25.0


def _agree_worker(rank: int, port: int, proposals: list, out: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    comm.init("gloo")
    from dexrl.runtime.data_parallel import agree

    decisions = [agree(p[rank]) for p in proposals]
    Path(out + str(rank)).write_text(",".join(str(int(d)) for d in decisions))
    comm.shutdown()


def test_ranks_agree_on_the_global_minimum(tmp_path):
    proposals = [(True, True), (True, False), (False, True), (False, False)]
    out = str(tmp_path / "decisions")
    mp.spawn(_agree_worker, args=(comm.free_loopback_port(), proposals, out), nprocs=2)
    assert Path(out + "0").read_text() == Path(out + "1").read_text() == "1,0,0,0"


def test_checkpoint_round_trip_and_max_mode(tmp_path, tiny):
    from dataclasses import replace

    from dexrl.runtime.checkpoint import load_checkpoint
    from dexrl.runtime.single import Trainer

    trainer = Trainer.build(tiny(1))
    trainer.adr_state = adr.ADRState(level=7, resets_since_change=123)
    trainer.save(tmp_path)
    resumed = Trainer.build(tiny(1))
    resumed.load_state_dict(load_checkpoint(tmp_path)[0])
    assert resumed.adr_state == adr.ADRState(level=7, resets_since_change=123)
    # 7 / 50 of the way: mass (1, 1) -> (0.5, 3): (1 - 0.5 * 0.14, 1 + 2 * 0.14) = (0.93, 1.28).
    assert resumed.env.cfg.randomization.mass_scale == pytest.approx((0.93, 1.28))

    maxed = Trainer.build(replace(tiny(1), adr="max"))
    assert maxed.adr_state.full
    assert maxed.env.cfg.randomization.kp_scale == pytest.approx((0.5, 2.0))
    assert maxed.env.cfg.reward.lift_weight == pytest.approx(0.0)
    # The very first episodes already use the terminal ranges: the spawn is spread out.
    xy = maxed.env.object_pos[:, :2]
    assert not torch.allclose(xy, torch.tensor([-0.55, 0.10]).expand_as(xy), atol=1e-3)
