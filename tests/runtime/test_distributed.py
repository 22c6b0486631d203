"""Multi-process runtimes on CPU with gloo: exact transfers, determinism, DP agreement, faults."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dexrl.cli import main
from dexrl.config.train import TrainConfig
from dexrl.runtime import comm, launch
from dexrl.runtime.checkpoint import latest_checkpoint, load_checkpoint

TINY = ["--num-envs", "4", "--set", "env.camera.width=16", "--set", "env.camera.height=12",
        "--set", "model.lstm_hidden=16", "--set", "model.lstm_layers=1", "--set", "model.mlp=[16, 16]",
        "--set", "model.critic_mlp=[16, 16]", "--set", "model.encoder_channels=[4, 4, 4, 4]",
        "--set", "ppo.num_steps=4", "--set", "ppo.seq_length=4", "--set", "ppo.num_minibatches=2",
        "--set", "ppo.num_epochs=2", "--set", "env.action_space=joint_delta", "--set", "env.episode_s=0.1"]
SHAPES = {"f16": ((3, 5, 7), torch.float16), "u16": ((2, 1, 9, 11), torch.uint16), "flag": ((13,), torch.bool),
          "i64": ((4, 3), torch.int64), "f32": ((1,), torch.float32)}


def _exact(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bits (uint16, which torch.equal does not take, compared as int16)."""
    bits = lambda t: t.view(torch.int16) if t.dtype == torch.uint16 else t  # noqa: E731
    return a.dtype == b.dtype and torch.equal(bits(a), bits(b))


def _transfer_worker(rank: int, port: int, out: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    comm.init("gloo")
    gen = torch.Generator().manual_seed(7)
    sent = {k: (torch.randint(0, 60000, shape, generator=gen) if dt != torch.bool else torch.rand(shape, generator=gen) > 0.5).to(dt)
            for k, (shape, dt) in SHAPES.items()}
    if rank == 0:
        comm.wait(comm.isend(list(sent.values()), 1), 10.0, 1, "peer")
    else:
        bufs = [torch.empty(shape, dtype=dt) for shape, dt in SHAPES.values()]
        comm.wait(comm.irecv(bufs, 0), 10.0, 0, "peer")
        ok = all(_exact(b, s) for b, s in zip(bufs, sent.values()))
        Path(out).write_text(str(ok))
    comm.shutdown()


def _stats_worker(rank: int, port: int, out: str):
    from dexrl.runtime.data_parallel import _mean_stats

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    comm.init("gloo")
    # Only rank 1 finished episodes this iteration.
    mine = {"a": 1.0, "episodes": 0} if rank == 0 else {"a": 3.0, "episodes": 2, "episode/return": 5.0, "note": "x"}
    Path(f"{out}.{rank}").write_text(json.dumps(_mean_stats(mine), sort_keys=True))
    comm.shutdown()


def test_data_parallel_statistics_merge_when_ranks_report_different_keys(tmp_path):
    out = tmp_path / "stats"
    mp.spawn(_stats_worker, args=(comm.free_loopback_port(), str(out)), nprocs=2)
    want = {"a": 2.0, "episodes": 2, "episode/return": 5.0}  # a averaged; the return only where it exists
    assert [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)] == [want, want]


def test_data_parallel_episode_statistics_are_weighted_by_episodes():
    from dexrl.runtime.data_parallel import merge_rank_stats

    # Rank 0: 100 episodes, all successes, return 10; rank 1: 1 failed episode, return -50.
    every = [{"success_rate": 0.5, "episodes": 100, "episode/success": 1.0, "episode/return": 10.0},
             {"success_rate": 0.1, "episodes": 1, "episode/success": 0.0, "episode/return": -50.0}]
    out = merge_rank_stats(every)
    # success 100 / 101 = 0.990; return (100 x 10 - 50) / 101 = 9.406; per-step means averaged.
    assert out["episode/success"] == pytest.approx(100 / 101) and out["episode/return"] == pytest.approx(950 / 101)
    assert out["success_rate"] == pytest.approx(0.3) and out["episodes"] == 101


def test_odd_shapes_and_dtypes_transfer_exactly(tmp_path):
    out = tmp_path / "ok.txt"
    mp.spawn(_transfer_worker, args=(comm.free_loopback_port(), str(out)), nprocs=2)
    assert out.read_text() == "True"


def _remote_envs_worker(rank: int, port: int, out: str, policy_input: str):
    """Ranks 0, 1: sims of four worlds (as two world groups of two for a depth policy); rank 2:
    RemoteEnvs beside a local GraspEnv of the same eight worlds, both stepped with the same
    actions."""
    from dataclasses import replace

    from tests.conftest import tiny_config
    from dexrl.envs.grasp import GraspEnv
    from dexrl.models.depth_codec import encode_depth
    from dexrl.runtime.disaggregated import RemoteEnvs, SimRank
    from dexrl.runtime.single import adr_env_config

    os.environ.update(RANK=str(rank), WORLD_SIZE="3", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    comm.init("gloo")
    base = tiny_config(1, episode_s=0.1)
    cfg = replace(base, env=replace(base.env, num_envs=8), runtime="disagg", sim_ranks=2, policy_input=policy_input,
                  pipeline=policy_input == "depth", ppo=replace(base.ppo, image_dtype="uint16mm"))
    keys = {"depth", "proprio", "critic"} if policy_input == "depth" else {"state_teacher", "critic"}
    if rank < 2:
        SimRank(cfg, rank, 2, "cpu").run()
        comm.shutdown()
        return
    remote = RemoteEnvs(cfg, [0, 1], torch.device("cpu"), timeout_s=60.0)
    local = GraspEnv(adr_env_config(cfg))
    mismatched = []

    def compare(step: int, got, want) -> None:
        got_obs, want_obs = got if isinstance(got, dict) else got.obs, want if isinstance(want, dict) else want.obs
        pairs = {f"obs/{k}": (v, encode_depth(want_obs[k], "uint16mm") if k == "depth" else want_obs[k])
                 for k, v in got_obs.items()}
        if got_obs.keys() != keys:
            mismatched.append(f"step {step} obs keys {sorted(got_obs)}")
        if not isinstance(got, dict):
            if got.info.keys() != want.info.keys() - {"nonfinite"}:  # (a sim's own count, not sent)
                mismatched.append(f"step {step} info keys {sorted(got.info)}")
            pairs.update(reward=(got.reward, want.reward), terminated=(got.terminated, want.terminated),
                         truncated=(got.truncated, want.truncated))
            pairs.update({f"reward_terms/{k}": (v, want.info["reward_terms"][k])
                          for k, v in got.info["reward_terms"].items()})
            pairs.update({k: (v, want.info[k]) for k, v in got.info.items() if k != "reward_terms"})
        mismatched.extend(f"step {step} {k}" for k, (a, b) in pairs.items() if not _exact(a, b))

    compare(-1, remote.reset(), local.reset())
    gen, finished = torch.Generator().manual_seed(0), 0
    for step in range(8):
        action = torch.rand(8, local.action_dim, generator=gen) * 2 - 1
        got, want = remote.step(action), local.step(action)
        compare(step, got, want)
        finished += int(want.info["done"].sum())
    remote.close()
    Path(out).write_text(json.dumps({"mismatched": mismatched, "finished": finished}))
    comm.shutdown()


@pytest.mark.parametrize("policy_input", ["depth", "state"])
def test_the_learner_receives_each_field_of_the_sims_steps_exactly(tmp_path, policy_input):
    """Two sims (of two world groups each for depth: the replies packed per group; the state
    teacher's have no image) against one local env of the same worlds: observations, reward,
    flags, reward terms and episode statistics equal, dtypes included, over episodes that end
    (0.1 s long). Each field's columns: tests/runtime/test_wire.py."""
    out = tmp_path / "remote.json"
    mp.spawn(_remote_envs_worker, args=(comm.free_loopback_port(), str(out), policy_input), nprocs=3)
    result = json.loads(out.read_text())
    assert result["mismatched"] == [] and result["finished"] >= 8


def _model(path: Path) -> dict:
    return load_checkpoint(path, shard=".rank" in path.name)[0]["model"]


def _single(run_dir: Path, iterations: int, *extra: str) -> Path:
    """A single-process TINY run's last checkpoint: the reference the other runtimes match."""
    assert main(["train", "--preset", "quickstart", "--max-iterations", str(iterations), *TINY, *extra,
                 "--run-dir", str(run_dir)]) == 0
    return run_dir / "checkpoints" / f"iter_{iterations:06d}.pt"


@pytest.fixture(scope="module")
def single_2(tmp_path_factory) -> Path:
    """Two iterations of `single`, shared by the tests that compare a runtime with it bitwise."""
    return _single(tmp_path_factory.mktemp("single"), 2)


@pytest.mark.parametrize("overlap", [False, True], ids=["", "overlap_update"])
def test_disaggregated_equals_single_bitwise(tmp_path, overlap, single_2, monkeypatch):
    args = ["train", "--preset", "quickstart", "--max-iterations", "3" if overlap else "2", *TINY,
            *(["--set", "overlap_update=true"] if overlap else [])]
    threads = torch.get_num_threads()
    if overlap:  # this pair on the count the user asks for (one); the plain pair on this process's
        threads = 1
        monkeypatch.setenv(launch.THREADS_ENV, "1")
    reference = _single(tmp_path / "single", 3, "--set", "overlap_update=true") if overlap else single_2
    assert main([*args, "--runtime", "disagg", "--sim-ranks", "2", "--run-dir", str(tmp_path / "disagg")]) == 0
    last = "iter_000003.pt" if overlap else "iter_000002.pt"
    a = _model(reference)
    b = _model(tmp_path / "disagg" / "checkpoints" / last)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    roles = [json.loads(p.read_text()) for p in sorted(Path(tmp_path / "disagg" / "ranks").glob("*.json"))]
    assert [(r["rank"], r["role"]) for r in roles] == [(0, "sim"), (1, "sim"), (2, "learner")]
    # The learner's reductions must run on as many threads as single's did.
    assert [r["torch_threads"] for r in roles] == [1, 1, threads]


@pytest.mark.parametrize("overlap", [False, True], ids=["", "overlap_update"])
def test_data_parallel_ranks_keep_identical_parameters(tmp_path, overlap, monkeypatch):
    monkeypatch.delenv(launch.THREADS_ENV, raising=False)
    run = tmp_path / "dp"
    assert main(["train", "--preset", "quickstart", "--max-iterations", "2", *TINY, "--runtime", "dp", "--ranks", "2",
                 *(["--set", "overlap_update=true"] if overlap else []), "--run-dir", str(run)]) == 0
    a = _model(run / "checkpoints" / "iter_000002.pt")
    b = _model(run / "checkpoints" / "iter_000002.rank1.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ranks = [json.loads((run / "ranks" / f"{r}.json").read_text()) for r in (0, 1)]
    assert [r["torch_threads"] for r in ranks] == [launch.learner_threads(TrainConfig(runtime="dp", ranks=2))] * 2
    initial = load_checkpoint(run / "checkpoints" / "iter_000002.pt")[0]
    assert initial["iteration"] == 2
    assert launch.THREADS_ENV not in os.environ  # set for the ranks only, not for later runs here


def test_data_parallel_ranks_share_the_cores_and_the_learner_keeps_its_threads(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert launch.learner_threads(TrainConfig(runtime="dp", ranks=2)) == 4
    assert launch.learner_threads(TrainConfig(runtime="dp", ranks=4)) == 2
    assert launch.learner_threads(TrainConfig(runtime="disagg", sim_ranks=4)) == torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert launch.learner_threads(TrainConfig(runtime="dp", ranks=4)) == 1


@pytest.mark.parametrize("host, killed", [("this", True), ("other-node", False)])
def test_a_silent_peer_is_killed_only_when_it_runs_on_this_host(tmp_path, monkeypatch, host, killed):
    import socket

    peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # The peer's launcher is this process, as the launcher is the parent of every rank.
        monkeypatch.setattr(os, "getppid", os.getpid)
        (tmp_path / "ranks").mkdir()
        hostname = socket.gethostname() if host == "this" else "other-node"
        (tmp_path / "ranks" / "1.json").write_text(json.dumps({"pid": peer.pid, "hostname": hostname}))
        launch._kill_if_here(tmp_path, 1)
        with pytest.raises(subprocess.TimeoutExpired) if not killed else contextlib.nullcontext():
            peer.wait(timeout=2)
        assert (peer.returncode == -signal.SIGKILL) == killed
    finally:
        peer.kill()
        peer.wait()


def test_launched_ranks_get_nccl_errors_as_failed_requests(tmp_path, monkeypatch):
    monkeypatch.delenv(comm.NCCL_ERROR_HANDLING[0], raising=False)
    seen = {}
    monkeypatch.setattr(comm, "launch_local", lambda *args, **kwargs: seen.update(os.environ) or None)
    assert launch.start([], TrainConfig(runtime="dp", ranks=2), tmp_path, None) == 0
    assert seen[comm.NCCL_ERROR_HANDLING[0]] == "2"  # not the launcher's "1": the watchdog would kill
    assert comm.NCCL_ERROR_HANDLING[0] not in os.environ  # for the ranks only
    monkeypatch.setenv(comm.NCCL_ERROR_HANDLING[0], "3")  # a user's own choice stands
    launch.start([], TrainConfig(runtime="dp", ranks=2), tmp_path, None)
    assert seen[comm.NCCL_ERROR_HANDLING[0]] == "3"


def test_a_failure_diagnosed_in_an_earlier_launch_is_not_reported_again(tmp_path, monkeypatch, capsys):
    """A resumed run directory still holds the last launch's ranks/failure.json."""
    (tmp_path / "ranks").mkdir()
    (tmp_path / "ranks" / "failure.json").write_text(json.dumps(
        {"rank": 1, "role": "sim", "cause": "no reply within 5 s", "reported_by": 2}))
    learner_crashed = {"rank": 2, "exitcode": 1, "signal": "<N/A>", "pid": 42}
    monkeypatch.setattr(comm, "launch_local", lambda *args, **kwargs: learner_crashed)
    assert launch.start([], TrainConfig(runtime="disagg", sim_ranks=2), tmp_path, None) == launch.EXIT_PEER_FAILED
    err = capsys.readouterr().err
    assert "learner rank 2 stopped: exit code 1 (pid 42)" in err and "sim rank 1" not in err, err


def test_a_hung_learner_is_reported_as_the_learner_not_as_the_sim_that_gave_up(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(comm, "failing", False)  # RankFailure sets it for this process
    (tmp_path / "ranks").mkdir()  # as every rank's ranks/<rank>.json does at start
    silent = comm.RankFailure(2, "learner", "no reply within 5 s")

    def sims_give_up(*args, **kwargs):  # what sim rank 0 does, then the launcher's view: rank 0 exited 3
        launch.report_failure(tmp_path, "sim", 0, silent)
        return {"rank": 0, "exitcode": launch.EXIT_PEER_FAILED, "signal": "<N/A>", "pid": 42}

    monkeypatch.setattr(comm, "launch_local", sims_give_up)
    assert launch.start([], TrainConfig(runtime="disagg", sim_ranks=2), tmp_path, None) == launch.EXIT_PEER_FAILED
    err = capsys.readouterr().err
    assert "error: learner rank 2 failed: no reply within 5 s" in err and "sim rank 0" not in err, err
    # A learner that named a silent sim: its connections close while it writes its checkpoint
    # (gloo), and the sims must neither replace its report nor kill it (if killed, the silent
    # sim is left to the launcher's 30 s grace: the fault test's exit time catches that).
    report = tmp_path / "ranks" / "failure.json"
    report.unlink()
    launch.report_failure(tmp_path, "sim", 0, comm.RankFailure(2, "learner", "connection lost"))
    assert not report.exists()
    report.write_text(json.dumps({"rank": 1, "role": "sim", "cause": "x"}))
    launch.report_failure(tmp_path, "sim", 0, silent)
    assert json.loads(report.read_text())["rank"] == 1


def test_a_rank_that_raises_an_unexpected_exception_prints_it_and_exits_at_once(monkeypatch, capsys):
    """The launcher would log it only through the loggers comm.launch_local silences; and a rank
    slow to exit would let its peers' 'peer failed' exits be reported first."""
    import dexrl.cli

    def defect(argv):
        raise TypeError("a defect")

    def exit_now(code):
        raise SystemExit(f"os._exit({code})")

    monkeypatch.setattr(dexrl.cli, "main", defect)
    monkeypatch.setattr(launch.os, "_exit", exit_now)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit, match=r"os\._exit\(1\)"):
        launch.rank_main(["train"])
    err = capsys.readouterr().err
    assert err.startswith("dexrl train: rank 1 raised:\nTraceback") and "TypeError: a defect" in err, err


DISAGG = ("--runtime", "disagg", "--sim-ranks", "2")
DP = ("--runtime", "dp", "--ranks", "2")


def _start_and_stop_rank_1(run: Path, sig: int, timeout_s: int, runtime: tuple = DISAGG,
                           extra: tuple = ()) -> tuple[int, str, float, float]:
    """Train with two sims and a learner (or two data-parallel ranks) in a subprocess, send
    ``sig`` to rank 1 after the first iteration is logged, return (exit code, stderr, seconds
    from the signal until the learner, or rank 0, is gone, seconds until the command has
    exited). No periodic checkpoint is due: any checkpoint afterwards is the failure's."""
    cmd = [sys.executable, "-m", "dexrl", "train", "--preset", "quickstart", *TINY, *runtime,
           "--max-iterations", "100000", "--fault-timeout", str(timeout_s),
           "--set", "checkpoint_every=100000", "--run-dir", str(run), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (metrics.exists() and metrics.read_text().endswith("\n")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        assert not list(run.glob("checkpoints/*.pt"))
        victim = json.loads((run / "ranks" / "1.json").read_text())
        assert victim["role"] == ("sim" if runtime == DISAGG else "dp")
        signalled = time.time()
        os.kill(victim["pid"], sig)
        last = json.loads((run / "ranks" / ("2.json" if runtime == DISAGG else "0.json")).read_text())["pid"]
        while time.time() < signalled + 3 * timeout_s + 30 and _alive(last):
            time.sleep(0.2)
        stopped = time.time() - signalled
        _, err = proc.communicate(timeout=120)
        exited = time.time() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.kill(victim["pid"], signal.SIGKILL)
        except (ProcessLookupError, NameError, UnboundLocalError):
            pass
    return proc.returncode, err, stopped, exited


def _alive(pid: int) -> bool:
    """Running (an exited process waiting for its parent to reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


KILLED = ("signal SIGKILL", "connection lost")


@pytest.mark.parametrize("sig, causes, extra", [
    (signal.SIGKILL, KILLED, ()), (signal.SIGSTOP, ("no reply within 10 s",), ()),
    # The sims then die while the collector thread waits for them, beside the PPO update.
    (signal.SIGKILL, KILLED, ("--set", "overlap_update=true"))], ids=["killed", "silent", "killed_overlap_update"])
def test_dead_or_silent_sim_rank_stops_the_learner_with_a_checkpoint(tmp_path, sig, causes, extra):
    run = tmp_path / "fault"
    code, err, stopped, exited = _start_and_stop_rank_1(run, sig, timeout_s=10, extra=extra)
    assert code != 0
    assert stopped < 10 + 15, stopped  # the learner stops within the fault timeout (+ slack)
    assert exited < 10 + 20, exited  # and a stopped sim is ended, not waited out by the launcher
    last = err.strip().splitlines()[-1]
    assert last.startswith("dexrl train: error: sim rank 1") and any(c in last for c in causes), last
    assert "--resume" in last, last
    payload, _ = load_checkpoint(run)
    assert payload["model"] and payload["iteration"] >= 1
    if sig == signal.SIGKILL and not extra:  # and --resume continues the run, sims restarted
        stop = payload["iteration"] + 1
        assert main(["train", "--resume", str(run), "--max-iterations", str(stop)]) == 0
        assert load_checkpoint(run)[0]["iteration"] == stop


def test_dead_data_parallel_rank_stops_the_run_in_one_line_and_resume_continues(tmp_path, capfd):
    run = tmp_path / "dp_fault"
    code, err, stopped, _ = _start_and_stop_rank_1(run, signal.SIGKILL, timeout_s=10, runtime=DP)
    assert code != 0 and stopped < 25, stopped
    # Rank 0 may say first that a peer failed; the launcher's report, naming it, comes last.
    assert "Traceback" not in err and "stopped by the launcher" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("dexrl train: error: dp rank 1 stopped: signal SIGKILL"), err
    latest = latest_checkpoint(run)  # the main checkpoint, not rank 1's shard of world state
    assert ".rank" not in latest.name and f"last checkpoint {latest};" in last
    # Rank 1 may die before it writes its shard: it must then start its own worlds afresh.
    latest.with_name(latest.stem + ".rank1.pt").unlink(missing_ok=True)
    stop = load_checkpoint(run)[0]["iteration"] + 1
    assert main(["train", "--resume", str(run), "--max-iterations", str(stop)]) == 0
    assert load_checkpoint(run)[0]["iteration"] == stop
    assert "rank 1: no " + latest.stem + ".rank1.pt; its worlds start fresh episodes" in capfd.readouterr().err


def test_silent_data_parallel_rank_is_named_and_the_run_stops_with_a_checkpoint(tmp_path):
    """A stopped rank neither answers nor closes its connections: its peers time out in their
    collective, check in at the store, and name the one that did not."""
    run = tmp_path / "dp_silent"
    code, err, stopped, exited = _start_and_stop_rank_1(run, signal.SIGSTOP, timeout_s=5, runtime=DP)
    assert code != 0 and stopped < 2 * 5 + 15, stopped  # collective timeout + check-in window
    assert exited < 2 * 5 + 20, exited  # the stopped rank is ended, not waited out by the launcher
    last = err.strip().splitlines()[-1]
    assert last.startswith("dexrl train: error: dp rank 1 failed: no reply within 5 s"), err
    assert f"--resume {run}" in last and "Traceback" not in err, err
    assert load_checkpoint(run)[0]["iteration"] >= 1


def test_a_single_process_run_resumes_on_data_parallel_ranks(tmp_path, capfd):
    run = tmp_path / "grow"
    assert main(["train", "--preset", "quickstart", "--max-iterations", "1", *TINY, "--run-dir", str(run)]) == 0
    assert main(["train", "--resume", str(run), *DP, "--max-iterations", "2"]) == 0
    assert load_checkpoint(run)[0]["iteration"] == 2
    assert "4 worlds on 2 data-parallel ranks: episodes start afresh" in capfd.readouterr().err
    # Each rank explores with noise of its own, not the single run's generator taken twice.
    ranks = [load_checkpoint(run / "checkpoints" / f"iter_000002{s}.pt", shard=bool(s))[0]["torch_rng"]
             for s in ("", ".rank1")]
    assert not torch.equal(*ranks)


def test_pipelined_disaggregated_run_collects_every_world(tmp_path):
    run = tmp_path / "pipe"
    assert main(["train", "--preset", "quickstart", "--max-iterations", "2", *TINY, "--runtime", "disagg",
                 "--sim-ranks", "2", "--set", "pipeline=true", "--set", "learner_device=cpu:0",
                 "--run-dir", str(run)]) == 0
    # The learner's own device is not the run's: a resumed run must keep its sims where they were.
    saved = load_checkpoint(run)[0]["config"]
    assert (saved["env"]["device"], saved["learner_device"]) == ("cpu", "cpu:0")
    rows = [__import__("json").loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    single = tmp_path / "single"
    assert main(["train", "--preset", "quickstart", "--max-iterations", "1", *TINY, "--run-dir", str(single)]) == 0
    first = __import__("json").loads((single / "metrics.jsonl").read_text().splitlines()[0])
    # Same worlds, same first actions' distribution: the first rollout's rewards agree closely
    # (acting on two half batches may round differently from one full batch).
    assert abs(rows[0]["reward/total"] - first["reward/total"]) < 1e-3
    assert rows[0]["transfer/bytes_per_step"] > 0 and len(rows) == 2


def test_ctrl_c_leaves_no_process_behind(tmp_path):
    run = tmp_path / "interrupt"
    cmd = [sys.executable, "-m", "dexrl", "train", "--preset", "quickstart", *TINY, "--runtime", "disagg",
           "--sim-ranks", "2", "--max-iterations", "100000", "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(run.glob("ranks/*.json"))) < 3:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        time.sleep(3)
        pids = [json.loads(p.read_text())["pid"] for p in run.glob("ranks/[0-9]*.json")]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("dexrl train: interrupted"), err[-2000:]
    time.sleep(1)
    assert not [pid for pid in pids if _alive(pid)], err[-2000:]


def _torchrun_node(run: Path, rdzv: list[str], node_rank: int, nprocs: int, *args: str,
                   runtime: tuple = DISAGG, host: tuple[str, str] | None = None) -> subprocess.Popen:
    """One node of a two-node `torchrun` job: on this machine's loopback, or in the network
    namespace ``host`` = (namespace, its interface) with gloo on that interface."""
    netns = ["ip", "netns", "exec", host[0], "env", f"GLOO_SOCKET_IFNAME={host[1]}"] if host else []
    cmd = [*netns, sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank),
           "--nproc-per-node", str(nprocs), *rdzv, "-m", "dexrl", "train", "--preset", "quickstart", *TINY,
           *runtime, "--run-dir", str(run), *args]
    # The learner's CPU reductions depend on its thread count: give it this process's.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _both_succeed(nodes: list[subprocess.Popen]) -> None:
    try:
        errs = [node.communicate(timeout=300)[1] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(e[-2000:] for e in errs)


def test_plain_torchrun_on_two_nodes_equals_single_bitwise(tmp_path, single_2):
    """The README's multi-node command (c10d rendezvous), two nodes of 2 + 1 processes."""
    rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{comm.free_loopback_port()}", "--rdzv-id", "t"]
    _both_succeed([_torchrun_node(tmp_path / "torchrun", rdzv, r, n, "--max-iterations", "2")
                   for r, n in ((0, 2), (1, 1))])
    a = _model(single_2)
    b = _model(tmp_path / "torchrun" / "checkpoints" / "iter_000002.pt")
    assert all(torch.equal(a[key], b[key]) for key in a)
    roles = {p.stem: json.loads(p.read_text())["role"] for p in (tmp_path / "torchrun" / "ranks").glob("*.json")}
    assert roles == {"0": "sim", "1": "sim", "2": "learner"}


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair, 10.77.<k>.1 and .2: two hosts' addresses,
    no loopback between them. Needs root and iproute2 (skipped elsewhere)."""
    k = os.getpid() % 200 + 20
    names = [f"dexrl{k}a", f"dexrl{k}b"]

    def ip(*args: str, check: bool = True) -> bool:
        return subprocess.run(["ip", *args], capture_output=True, check=check).returncode == 0

    try:
        if not ip("netns", "add", names[0], check=False):
            pytest.skip("network namespaces need root and iproute2")
        ip("netns", "add", names[1])
        ip("link", "add", f"v{k}a", "type", "veth", "peer", "name", f"v{k}b")
        hosts = []
        for ns, end, addr in zip(names, "ab", (f"10.77.{k}.1", f"10.77.{k}.2")):
            ip("link", "set", f"v{k}{end}", "netns", ns)
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", f"v{k}{end}")
            ip("-n", ns, "link", "set", f"v{k}{end}", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            hosts.append((ns, addr, f"v{k}{end}"))
        yield hosts
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_torchrun_across_two_hosts_addresses(tmp_path, two_hosts):
    """The README's multi-node recipe with real addresses (not loopback): the c10d rendezvous
    hosted on node 0's address, each node advertising its own, gloo on each node's interface."""
    run, (_, addr0, _) = tmp_path / "two_hosts", two_hosts[0]
    rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{addr0}:29500", "--rdzv-id", "hosts"]
    _both_succeed([_torchrun_node(run, [*rdzv, "--rdzv-conf", f"is_host={int(r == 0)}", "--local-addr", addr], r, n,
                                  "--max-iterations", "2", host=(ns, nic))
                   for r, ((ns, addr, nic), n) in enumerate(zip(two_hosts, (2, 1)))])
    assert load_checkpoint(run)[1].name == "iter_000002.pt"
    roles = {p.stem: json.loads(p.read_text())["role"] for p in (run / "ranks").glob("*.json")}
    assert roles == {"0": "sim", "1": "sim", "2": "learner"}


def _signal_rank_on_node_1(run: Path, nodes: list[subprocess.Popen], rank: str, sig: int) -> tuple[str, float, dict]:
    """After the first logged iteration, send ``sig`` to ``rank`` (on node 1); return node 0's
    stderr, the seconds node 0 took to exit after the signal, and every rank's pid."""
    pids, metrics = {}, run / "metrics.jsonl"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
            assert all(node.poll() is None for node in nodes), [node.communicate() for node in nodes]
            time.sleep(0.5)
        pids = {p.stem: json.loads(p.read_text())["pid"] for p in run.glob("ranks/*.json")}
        os.kill(pids[rank], sig)
        signalled = time.time()
        err = nodes[0].communicate(timeout=60)[1]
        return err, time.time() - signalled, pids
    finally:
        if rank in pids and _alive(pids[rank]):
            os.kill(pids[rank], signal.SIGKILL)
        for node in nodes:
            if node.poll() is None:
                node.kill()


def _static_rendezvous() -> list[str]:
    return ["--master-addr", "127.0.0.1", "--master-port", str(comm.free_loopback_port())]


@pytest.mark.parametrize("sig, cause", [(signal.SIGKILL, "connection lost"), (signal.SIGSTOP, "no reply within 5 s")],
                         ids=["dies", "hangs"])
def test_sim_ranks_exit_when_the_learner_on_another_node_dies_or_hangs(tmp_path, sig, cause):
    """No launcher spans both nodes: the sims must notice the learner's death (closed
    connection) or silence (--learner-timeout) themselves."""
    run, rdzv = tmp_path / "two_nodes", _static_rendezvous()
    args = ("--max-iterations", "100000", "--set", "checkpoint_every=1", "--learner-timeout", "5")
    # Static rendezvous: node 0 holds ranks 0 and 1 (the sims), node 1 rank 2 (the learner).
    nodes = [_torchrun_node(run, rdzv, 0, 2, *args), _torchrun_node(run, rdzv, 1, 1, *args)]
    err, took, pids = _signal_rank_on_node_1(run, nodes, "2", sig)
    assert nodes[0].returncode != 0 and took < 30, took
    assert f"rank 0 (sim): learner rank 2 failed: {cause}" in err, err[-2000:]
    assert not _alive(pids["0"]) and not _alive(pids["1"])


def test_data_parallel_rank_checkpoints_and_exits_when_its_peer_on_another_node_dies(tmp_path):
    run, rdzv = tmp_path / "dp_two_nodes", _static_rendezvous()
    args = ("--max-iterations", "100000", "--set", "checkpoint_every=100000")  # no periodic checkpoint
    nodes = [_torchrun_node(run, rdzv, r, 1, *args, runtime=DP) for r in (0, 1)]
    err, took, _ = _signal_rank_on_node_1(run, nodes, "1", signal.SIGKILL)
    assert nodes[0].returncode != 0 and took < 30, took
    assert "rank 0 (dp): a data-parallel peer failed: connection lost" in err, err[-2000:]
    assert load_checkpoint(run)[0]["iteration"] >= 1  # written on the way out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the collector's own stream exists only there")
def test_overlapped_pipelined_learner_on_cuda_trains_and_resumes(tmp_path):
    """Sims on CPU, the learner on CUDA with the collector on its own stream beside the update."""
    run = tmp_path / "cuda_learner"
    args = ["train", "--preset", "quickstart", *TINY, "--runtime", "disagg", "--sim-ranks", "2",
            "--set", "learner_device=cuda", "--set", "overlap_update=true", "--set", "pipeline=true"]
    assert main([*args, "--max-iterations", "2", "--run-dir", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--max-iterations", "3"]) == 0
    payload = load_checkpoint(run)[0]
    assert payload["iteration"] == 3 and all(torch.isfinite(v).all() for v in payload["model"].values())
