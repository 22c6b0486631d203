"""`dexrl train` (single process): run-directory files, exact resume, reward that rises."""

import copy
import dataclasses
import json
import os
import signal
import threading
import time

import pytest
import torch

from dexrl import adr
from dexrl.cli import main
from dexrl.config.train import apply_overrides, dumps, loads, preset, to_dict
from dexrl.runtime.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, resumable
from dexrl.runtime.logger import read_metrics
from dexrl.runtime.comm import RankFailure
from dexrl.rl import RolloutStorage
from dexrl.runtime.collector import PhaseTimer
from dexrl.runtime.single import Interrupted, Trainer


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_is_bitwise_identical(tmp_path, tiny):
    straight = Trainer.build(tiny(4))
    straight.train(tmp_path / "a", progress=False)

    first = Trainer.build(tiny(2))
    first.train(tmp_path / "b", progress=False)
    payload, _ = load_checkpoint(tmp_path / "b")
    resumed = Trainer.build(tiny(4))
    resumed.load_state_dict(payload)
    assert resumed.iteration == 2
    resumed.train(tmp_path / "b", progress=False)

    a, b = params(straight), params(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(ln) for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]


def test_config_round_trip_and_overrides():
    cfg = preset("teacher-depth")
    assert loads(dumps(cfg)) == cfg
    changed = apply_overrides(cfg, ["ppo.lr=0.0003", "env.camera.width=80", "model.mlp=[64, 32]"])
    assert changed.ppo.lr == 3e-4 and changed.env.camera.width == 80 and changed.model.mlp == (64, 32)
    with pytest.raises(ValueError, match=r"unknown option 'ppo.lrr' \(did you mean ppo.lr\?\)"):
        apply_overrides(cfg, ["ppo.lrr=1"])
    with pytest.raises(ValueError, match=r"'camra' is not a section \(did you mean env.camera\?\)"):
        apply_overrides(cfg, ["env.camra.width=80"])
    with pytest.raises(ValueError, match=r"unknown option 'zzz'; dexrl train --print-config"):  # nothing close
        apply_overrides(cfg, ["zzz=1"])
    with pytest.raises(ValueError, match="num_minibatches"):
        apply_overrides(cfg, ["env.num_envs=10"])  # 10 worlds do not split into 4 minibatches
    # A value of the wrong kind fails naming the option, rather than deep inside the run.
    for item, kind in (("ppo.lr=abc", "a number"), ("ppo.num_epochs=2.5", "an integer"),
                       ("overlap_update=1", "true or false"), ("model.mlp=[16,x]", "a list")):
        with pytest.raises(ValueError, match=f"option {item.split('=')[0]} must be {kind}"):
            apply_overrides(cfg, [item])
    assert apply_overrides(cfg, ["ppo.lr_max=1"]).ppo.lr_max == 1.0  # an integer for a number
    assert apply_overrides(cfg, ["backend=gloo"]).backend == "gloo"
    assert apply_overrides(cfg, ["env.device=0"]).env.device == "0"  # a string option keeps the text
    # Accepted, they would silently do nothing (a learner device outside disagg) or nonsense.
    with pytest.raises(ValueError, match="at least one control step"):
        apply_overrides(cfg, ["env.episode_s=0"])
    with pytest.raises(ValueError, match="learner_device places the disaggregated learner"):
        apply_overrides(cfg, ["learner_device=cpu"])
    assert apply_overrides(cfg, ["runtime=disagg", "learner_device=cpu"]).learner_device == "cpu"


@pytest.mark.parametrize("option, cause", [
    ("learner_device=gpu", "learner_device 'gpu': unknown device"),
    ("env.device=tpu", "--device 'tpu': unknown device"),
    *([] if torch.cuda.is_available() else [("learner_device=cuda", "learner_device 'cuda': no CUDA device")])])
def test_a_device_the_machine_lacks_stops_a_multi_process_run_before_any_rank(tmp_path, capsys, option, cause):
    # Otherwise the learner fails alone and the launcher's last line names a sim rank.
    args = ["train", "--runtime", "disagg", "--sim-ranks", "2", "--set", option, "--run-dir", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dexrl train: error: {cause}") and err.count("\n") == 1, err
    assert not (tmp_path / "r" / "ranks").exists()  # no rank was started


def test_a_gpu_index_the_machine_lacks_is_refused_before_launch(monkeypatch):
    from dexrl.config.train import TrainConfig
    from dexrl.runtime import launch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    launch.check_devices(TrainConfig(runtime="disagg", learner_device="cuda:1"))  # exists
    with pytest.raises(RuntimeError, match="learner_device 'cuda:2': this machine has 2 CUDA device"):
        launch.check_devices(TrainConfig(runtime="disagg", learner_device="cuda:2"))


@pytest.mark.parametrize("value", ["0", "two", "-1", ""])
def test_a_bad_thread_count_stops_a_run_before_any_rank(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("DEXRL_TORCH_THREADS", value)
    assert main(["train", "--runtime", "disagg", "--sim-ranks", "2", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == f"dexrl train: error: DEXRL_TORCH_THREADS must be a whole number >= 1, got {value!r}\n"
    assert not (tmp_path / "r" / "ranks").exists()


def test_a_single_process_run_learns_on_the_threads_asked_for_and_gives_them_back(tmp_path, monkeypatch):
    before, seen = torch.get_num_threads(), []

    def build(cfg):  # the trainer is built, and trains, inside the thread setting
        seen.append(torch.get_num_threads())
        raise ValueError("stop here")

    monkeypatch.setattr(Trainer, "build", build)
    monkeypatch.setenv("DEXRL_TORCH_THREADS", str(before + 1))
    assert main(["train", "--run-dir", str(tmp_path / "r")]) == 2
    monkeypatch.delenv("DEXRL_TORCH_THREADS")
    assert main(["train", "--run-dir", str(tmp_path / "s")]) == 2
    assert seen == [before + 1, before] and torch.get_num_threads() == before


def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(bad)
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_a_checkpoint_of_another_network_is_a_clear_error(tiny):
    trainer = Trainer.build(tiny(1))
    payload = trainer.state_dict()
    key = next(k for k in payload["model"] if k.endswith("proj.weight"))
    payload["model"][key] = torch.zeros(32, 5)  # e.g. an earlier dexrl's encoder
    with pytest.raises(CheckpointError, match=f"does not fit .*: size mismatch for {key}"):
        trainer.load_state_dict(payload)


def test_quickstart_run_writes_run_dir_and_reward_rises(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--preset", "quickstart", "--run-dir", str(run), "--max-iterations", "8", "--num-envs", "16"])
    assert code == 0
    for name in ("config.json", "metrics.jsonl", "learning_curves.png"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "iter_000008.pt").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["git"] and config["config"]["preset"] == "quickstart"
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"env_steps_per_s", "reward/hand_to_object", "loss/policy", "time/env_s"} <= rows[0].keys()
    first = sum(r["reward/hand_to_object"] for r in rows[:2]) / 2
    last = sum(r["reward/hand_to_object"] for r in rows[-2:]) / 2
    assert last > first, (first, last)

    # The trained checkpoint evaluates deterministically and prints a JSON line last.
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--num-envs", "2", "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["policy"] == "checkpoint" and result["objects"] == "train"
    # Held-out objects and another episode length may be asked for; the camera may not (the
    # network's input), and is refused in one line rather than ignored.
    assert main(["eval", "--checkpoint", str(run), "--num-envs", "2", "--episodes", "2", "--objects", "eval",
                 "--episode-s", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["objects"] == "eval" and 0 < result["mean_length_s"] <= 0.5 + 1e-6
    assert main(["eval", "--checkpoint", str(run), "--policy", "scripted"]) == 2
    assert "--policy and --checkpoint exclude each other" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run), "--resolution", "160x120"]) == 2
    assert "--resolution 160x120 does not match the checkpoint's environment (80x60)" in capsys.readouterr().err

    assert main(["train", "--resume", str(run), "--preset", "teacher-depth"]) == 2  # not silently ignored
    assert "--preset teacher-depth: a resumed run keeps its own config (preset quickstart)" in capsys.readouterr().err
    # A new run into this directory would leave iter_000008.pt beside its own checkpoints.
    assert main(["train", "--preset", "quickstart", "--run-dir", str(run), "--max-iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{run} already holds a run (checkpoint iter_000008.pt); continue it with --resume" in err


def test_resuming_an_earlier_checkpoint_sets_the_later_ones_aside(tmp_path, tiny, capsys):
    run = tmp_path / "run"
    Trainer.build(tiny(4)).train(run, progress=False)  # checkpoints at iterations 2 and 4
    payload, _ = load_checkpoint(run / "checkpoints" / "iter_000002.pt")
    branch = Trainer.build(tiny(3))
    branch.load_state_dict(payload)
    branch.train(run, progress=False)  # a new branch from iteration 2, to 3
    # iter_000004.pt belongs to the abandoned branch: --resume RUN and eval RUN must not pick it.
    assert latest_checkpoint(run).name == "iter_000003.pt"
    aside = run / "checkpoints" / "abandoned-after-iter_000002"
    assert [p.name for p in aside.iterdir()] == ["iter_000004.pt"]
    assert f"resumed at iteration 2: the later checkpoints moved to {aside}" in capsys.readouterr().err
    assert [r["iteration"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1, 2]


def _overlap(tiny, iterations: int):
    cfg = tiny(iterations)
    cfg.adr, cfg.overlap_update = "off", True
    return cfg


def test_overlap_update_collects_each_rollout_with_the_parameters_before_the_update(tmp_path, tiny):
    overlapped = Trainer.build(_overlap(tiny, 3))
    overlapped.train(tmp_path / "o", progress=False)

    # The same schedule by hand on one thread: R0 with theta0, then R(i+1) with theta_i
    # while update i turns theta_i into theta(i+1). The update draws only from PPO's own
    # generator, so collecting first and updating second consumes the same random numbers.
    cfg = _overlap(tiny, 3)
    cfg.overlap_update = False
    ref = Trainer.build(cfg)
    actor = copy.deepcopy(ref.model)
    ref.collector.model = actor
    storages = [ref.storage, RolloutStorage(ref.storage.spec, cfg.model, cfg.ppo, ref.env.n, ref.device)]
    timer = PhaseTimer(ref.device)
    ref.collector.collect(storages[0], timer)
    for i in range(3):
        actor.load_state_dict(ref.model.state_dict())
        ref.collector.collect(storages[1], timer)
        ref.ppo.rebase_kl(storages[0])  # the learning rate follows the KL from theta_i
        ref.ppo.update(storages[0])
        storages.reverse()
    a, b = params(overlapped), params(ref)
    for key in a:
        assert torch.equal(a[key], b[key]), key

    synchronous = Trainer.build(cfg)
    synchronous.train(tmp_path / "s", progress=False)
    assert any(not torch.equal(a[k], v) for k, v in params(synchronous).items())  # the lag is real


def test_a_second_ctrl_c_does_not_wait_for_the_rollout_in_flight(tmp_path, tiny, monkeypatch):
    """overlap_update: the next rollout runs on the collector thread beside the update. A
    second Ctrl-C (KeyboardInterrupt on the main thread) ends it at its next step."""
    trainer = Trainer.build(_overlap(tiny, 3))
    steps, step, update, at_interrupt = [], trainer.env.step, trainer.ppo.update, []

    def slow_step(action):  # 4 steps a rollout, 0.2 s each
        steps.append(1)
        time.sleep(0.2)
        return step(action)

    def update_then_ctrl_c(storage):
        if at_interrupt or trainer.iteration == 0:
            return update(storage)
        time.sleep(0.1)  # the collector thread is inside the next rollout's first step
        at_interrupt.append(len(steps))
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.env, "step", slow_step)
    monkeypatch.setattr(trainer.ppo, "update", update_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tmp_path, progress=False)
    for thread in threading.enumerate():
        if thread.name.startswith("dexrl-collect"):
            thread.join(timeout=30)
    assert len(steps) - at_interrupt[0] <= 1, (len(steps), at_interrupt)  # not the rollout's other 3


def test_overlap_update_resumes_acting_with_the_loaded_parameters(tmp_path, tiny):
    Trainer.build(_overlap(tiny, 2)).train(tmp_path / "a", progress=False)
    payload, _ = load_checkpoint(tmp_path / "a")
    resumed = Trainer.build(_overlap(tiny, 4))
    resumed.load_state_dict(payload)
    loaded = copy.deepcopy(resumed.model)
    resumed._iteration(resumed.env.n)
    # The rollout trained in that iteration (now the spare storage) was collected by the
    # loaded policy: its log-probabilities re-evaluate to the recorded ones.
    mb = resumed.spare.gather(torch.arange(resumed.env.n))
    with torch.no_grad():
        ev = loaded.evaluate(mb.obs, mb.actions, mb.states, mb.resets)
    torch.testing.assert_close(ev.log_prob, mb.log_probs, rtol=1e-4, atol=1e-4)
    rows = [json.loads(ln) for ln in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1] and all(r["time/update_s"] > 0 for r in rows)


def test_dropped_contacts_are_logged_and_warned_once(tmp_path, tiny, capsys):
    """Contact pools too small for the scene: the run says so (metric and one warning line);
    the default pools drop nothing."""
    Trainer.build(tiny(6, nconmax_per_world=1, naccdmax_per_world=1)).train(tmp_path / "small", progress=False)
    Trainer.build(tiny(6)).train(tmp_path / "default", progress=False)
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "dropped contacts" in ln]
    assert len(warnings) == 1 and "env.naccdmax_per_world" in warnings[0], warnings

    def overflow(run: str) -> list[float]:
        rows = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(ln)["physics/overflow"] for ln in rows]

    assert max(overflow("small")) > 0 and max(overflow("default")) == 0


@pytest.mark.parametrize("every, env_kept", [(1, True), (5, False)], ids=["checkpointed", "not_checkpointed"])
def test_a_failed_peer_leaves_the_best_checkpoint_of_the_last_iteration(tmp_path, tiny, monkeypatch, every, env_kept):
    """The failure checkpoint (weights and optimizer only) never replaces a full one."""
    trainer = Trainer.build(dataclasses.replace(tiny(10), checkpoint_every=every))
    collect, calls = trainer.collector.collect, []

    def collect_until_the_peer_dies(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RankFailure(1, "sim", "connection lost")
        return collect(*args)

    monkeypatch.setattr(trainer.collector, "collect", collect_until_the_peer_dies)
    with pytest.raises(RankFailure):
        trainer.train(tmp_path, progress=False)
    payload, path = load_checkpoint(tmp_path)
    assert path.name == "iter_000002.pt" and torch.equal(payload["model"]["log_std"], trainer.model.log_std)
    assert (payload.get("env") is not None) == env_kept


def test_a_peer_failing_inside_the_update_leaves_the_weights_from_before_it(tmp_path, tiny, monkeypatch):
    """A data-parallel collective fails (or the launcher's stop signal lands) half way through
    an update: the failure checkpoint holds the last finished iteration, not half an update,
    nor the ADR step of the iteration that failed (a resumed run collects it again)."""
    # Episodes of 4 steps, one rollout each: ADR counts 4 ended episodes every iteration.
    trainer = Trainer.build(dataclasses.replace(tiny(10, episode_s=4 / 60), checkpoint_every=5, runtime="dp"))
    update, before, adr_at = trainer.ppo.update, [], []

    def update_until_the_peer_dies(storage):
        before.append((params(trainer), copy.deepcopy(trainer.ppo.state_dict())))
        adr_at.append(vars(trainer.adr_state).copy())  # this iteration's ADR step is taken
        out = update(storage)  # the weights and the optimizer move ...
        if len(before) == 3:
            raise RankFailure(None, "data-parallel", "connection lost")  # ... then the last all-reduce fails
        return out

    monkeypatch.setattr(trainer.ppo, "update", update_until_the_peer_dies)
    with pytest.raises(RankFailure):
        trainer.train(tmp_path, progress=False)
    payload, path = load_checkpoint(tmp_path)
    weights, ppo = before[2]
    assert path.name == "iter_000002.pt" and payload["env"] is None
    assert all(torch.equal(payload["model"][k], weights[k]) for k in weights)
    assert not torch.equal(payload["model"]["log_std"], trainer.model.log_std)  # the third update moved it
    assert payload["ppo"]["optimizer"]["state"][0]["step"] == ppo["optimizer"]["state"][0]["step"]
    assert adr_at[1] != adr_at[2] and payload["adr"] == adr_at[1]  # as of iteration 2's end


def test_adr_max_stays_terminal_when_a_run_resumes_with_it(tiny):
    trainer = Trainer.build(tiny(1))
    payload = {**trainer.state_dict(), "adr": {"level": 12, "resets_since_change": 0}}
    trainer.load_state_dict(payload)
    assert trainer.adr_state.level == 12
    trainer.cfg = dataclasses.replace(trainer.cfg, adr="max")  # dexrl train --resume RUN --adr max
    trainer.adr_state = adr.initial_state("max")
    trainer.load_state_dict(payload)
    assert trainer.adr_state.level == adr.NUM_STEPS


def test_resuming_under_another_world_split_keeps_the_weights_and_drops_the_episodes(tiny):
    cfg = tiny(2)
    payload = {"config": to_dict(cfg), "model": {"w": 1}, "env": {"qpos": 2}, "collector": {"h": 3}}
    assert resumable(payload, cfg) == (payload, None)
    dp = dataclasses.replace(cfg, runtime="dp", ranks=2)
    kept, warning = resumable(payload, dp)
    assert kept == {"config": payload["config"], "model": {"w": 1}}
    assert warning == ("the checkpoint's worlds were split as 4 worlds in one process, this run's as "
                       "4 worlds on 2 data-parallel ranks: episodes start afresh")


def test_a_rank_loading_another_ranks_checkpoint_draws_its_own_noise_and_minibatch_order(tiny):
    from dexrl.runtime.checkpoint import without_episodes

    payload = without_episodes(Trainer.build(tiny(1)).state_dict())  # rank 0's, less its RNG states
    rank1 = Trainer.build(dataclasses.replace(tiny(1), runtime="dp", ranks=2), rank=1, is_logger=False)
    rank1.load_state_dict(payload)
    again = Trainer.build(dataclasses.replace(tiny(1), runtime="dp", ranks=2), rank=1, is_logger=False)
    again.load_state_dict(payload)
    assert not torch.equal(rank1.ppo.generator.get_state(), payload["ppo"]["generator"])
    assert torch.equal(rank1.ppo.generator.get_state(), again.ppo.generator.get_state())  # reproducible


def test_an_adr_step_widens_the_environments_ranges(tiny):
    trainer = Trainer.build(dataclasses.replace(tiny(1), adr="on"))
    start = trainer.env.cfg
    trainer._step_adr({"success_rate": 0.39, "episodes": 5000})  # below the 0.4 threshold: no move
    assert (trainer.adr_state.level, trainer.adr_state.resets_since_change) == (0, 5000)
    assert trainer.env.cfg == start
    trainer._step_adr({"success_rate": 0.4, "episodes": 1})
    # Level 1 of 50: mass scale (1, 1) -> (1 - 0.5 / 50, 1 + 2 / 50); lift weight 5 -> 5 - 5 / 50.
    assert trainer.adr_state.level == 1
    assert trainer.env.cfg.randomization.mass_scale == pytest.approx((0.99, 1.04))
    assert trainer.env.cfg.reward.lift_weight == pytest.approx(4.9)


def test_ctrl_c_stops_a_run_at_the_iteration_end_with_a_whole_checkpoint(tmp_path, tiny):
    trainer = Trainer.build(dataclasses.replace(tiny(4), checkpoint_every=10))
    one_iteration = trainer._iteration

    def iteration_then_ctrl_c(n):
        row = one_iteration(n)
        if trainer.iteration == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during iteration 0
        return row

    trainer._iteration = iteration_then_ctrl_c
    handler = signal.getsignal(signal.SIGINT)  # (another test's launcher may have set its own)
    with pytest.raises(Interrupted) as stop:
        trainer.train(tmp_path, progress=False)
    assert (stop.value.iteration, stop.value.checkpoint.name) == (1, "iter_000001.pt")
    payload, _ = load_checkpoint(tmp_path)
    assert payload["iteration"] == 1 and payload["env"] is not None  # with the episodes: resumes bit for bit
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C is itself again


def test_episode_stats_average_the_ended_episodes_only():
    from dexrl.runtime.collector import EpisodeStats

    stats = EpisodeStats()
    zeros = torch.zeros(3)
    for done, ret, length, held in (([1, 0, 0], [2.0, float("nan"), 5.0], [10, 3, 4], [1, 0, 0]),
                                    ([0, 1, 1], [0.0, 6.0, 1.0], [1, 20, 30], [0, 0, 1])):
        stats.add({"reward_terms": {}, "success": zeros.bool(), "physics_overflow": zeros.bool(),
                   "done": torch.tensor(done, dtype=torch.bool), "episode_return": torch.tensor(ret),
                   "episode_length": torch.tensor(length), "episode_success": torch.tensor(held, dtype=torch.bool)},
                  zeros)
    out = stats.summary(ctrl_dt=0.5)
    # Ended: (2, 10 steps, held), (6, 20, not), (1, 30, held); world 1's running NaN never counts.
    assert out["episodes"] == 3 and out["episode/return"] == 3.0
    assert out["episode/length_s"] == 10.0 and out["episode/success"] == pytest.approx(2 / 3)
