"""eval's episode bookkeeping: every world's first episodes, round by round."""

import torch

from dexrl.evaluate import EpisodeTally


def _step(tally: EpisodeTally, ended: list[int], success: list[int] = (), reached: list[int] = ()) -> int:
    n = len(tally.ended)
    done = torch.zeros(n, dtype=torch.bool)
    done[ended] = True
    held, entered = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    held[list(success)] = True
    entered[list(success) + list(reached)] = True
    return tally.record(done, held, entered, torch.arange(n, dtype=torch.float32), torch.full((n,), 7))


def test_short_failed_episodes_do_not_crowd_out_the_other_worlds():
    # 2 worlds, 2 episodes asked: one round. World 1 loses its object three times (steps 1-3)
    # before world 0's first episode ends in success (step 4).
    tally = EpisodeTally(2, rounds=1)
    assert [_step(tally, [1]), _step(tally, [1]), _step(tally, [1])] == [1, 0, 0]
    assert not tally.complete
    assert _step(tally, [0], success=[0]) == 1 and tally.complete
    # Taking whichever ended first would have counted world 1 twice: success rate 0 instead of 1/2.
    assert tally.first(2) == [(0, 0, True, True, 0.0, 7), (0, 1, False, False, 1.0, 7)]


def test_success_and_reached_are_kept_apart():
    tally = EpisodeTally(3, rounds=1)
    _step(tally, [0, 1, 2], success=[0], reached=[1])  # world 1 entered the region, then lost the object
    assert [row[2:4] for row in tally.first(3)] == [(True, True), (False, True), (False, False)]


def test_episodes_are_taken_round_by_round_then_by_world():
    # 3 worlds, 4 episodes asked: two rounds, of which round 1 is cut after world 0.
    tally = EpisodeTally(3, rounds=2)
    _step(tally, [2])
    _step(tally, [2, 1])
    _step(tally, [0, 1])
    _step(tally, [0, 2])
    assert tally.complete and tally.ended == [2, 2, 3]
    assert [(r, w) for r, w, *_ in tally.first(4)] == [(0, 0), (0, 1), (0, 2), (1, 0)]
