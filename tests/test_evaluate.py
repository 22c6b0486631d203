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


class _ScheduledEnv:
    """Two worlds whose steps follow a script: (in the region, done, held) per world."""

    n, device, nonfinite_resets = 2, "cpu", 0
    script = [  # step: in region, done, held for the last 2 s (on the step that ends)
        ([1, 0], [0, 0], [0, 0]),  # world 0 enters the region...
        ([0, 1], [1, 1], [0, 0]),  # ...and has left it when its episode ends; world 1 enters on its last step
        ([0, 1], [1, 0], [0, 0]),  # world 0's second episode never entered: its flag must have been cleared
        ([0, 0], [0, 1], [0, 1]),  # world 1's second episode entered (step 3) and held
    ]

    def __init__(self, cfg, third_person=False):
        self.t = 0

    def reset(self):
        return {}

    def step(self, action):
        region, done, held = (torch.tensor(x, dtype=torch.bool) for x in self.script[self.t])
        self.t += 1
        info = {"success": region, "done": done, "episode_success": held,
                "episode_return": torch.zeros(2), "episode_length": torch.full((2,), 3)}
        return type("Step", (), {"obs": {}, "info": info})


def test_eval_counts_reached_over_each_whole_episode_and_clears_it_at_the_next(monkeypatch):
    import dexrl.evaluate
    from dexrl.config.env import EnvConfig

    class Still:
        def act(self, obs):
            return torch.zeros(2, 23)

        def reset(self, done):
            pass

    monkeypatch.setattr(dexrl.evaluate, "GraspEnv", _ScheduledEnv)
    monkeypatch.setattr(dexrl.evaluate, "make_policy", lambda name, env: Still())
    result = dexrl.evaluate.evaluate(EnvConfig(num_envs=2), "scripted", episodes=4)
    # Episodes (round, world): (0, 0) reached, (0, 1) reached on its last step, (1, 0) not,
    # (1, 1) reached and held.
    assert (result["reached_rate"], result["success_rate"]) == (3 / 4, 1 / 4)
