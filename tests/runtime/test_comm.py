"""comm's waits as they behave under NCCL, on CPU: a host that polls the request, and the
small control collectives on their own gloo group with the fault timeout."""

import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dexrl.runtime import comm


class _Request:
    """A request that completes after ``polls`` calls of is_completed() (never: None). Its
    wait() returns at once, as NCCL's does without a timeout: it only orders the current CUDA
    stream after the request."""

    def __init__(self, polls: int | None):
        self.polls, self.asked = polls, 0

    def is_completed(self) -> bool:
        self.asked += 1
        return self.polls is not None and self.asked > self.polls

    def wait(self, timeout=None) -> bool:
        return True


def test_polling_returns_once_the_request_completes():
    request = _Request(polls=3)
    assert comm._completed_within(request, timeout_s=5.0)
    assert request.asked == 4  # three misses, then done: no poll after completion


class _Clock:
    """comm's time module, standing still but for the sleeps asked of it."""

    def __init__(self):
        self.now, self.sleeps = 100.0, []  # (when, seconds) of every sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append((self.now - 100.0, seconds))
        self.now += seconds


def test_polling_sleeps_finely_then_coarsely_and_gives_up_at_the_timeout(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(comm, "time", clock)
    assert not comm._completed_within(_Request(polls=None), timeout_s=1.5)
    assert clock.now - 100.0 == pytest.approx(1.5)  # the last sleep ends at the deadline, not after
    first = [s for _, s in clock.sleeps[:5]]
    assert first == pytest.approx([2e-5, 4e-5, 8e-5, 1.6e-4, 2e-4])  # doubling up to 0.2 ms
    early = [s for at, s in clock.sleeps if at < 1.0]
    late = [s for at, s in clock.sleeps if at > 1.1]
    # 0.2 ms sleeps while a reply may come any moment; 10 ms once the wait is long.
    assert max(early) == pytest.approx(2e-4) and late[:-1] == pytest.approx([1e-2] * (len(late) - 1))


def test_a_silent_peer_under_nccl_is_named_within_the_timeout(monkeypatch):
    # Were the host to rely on NCCL's own waiting, silence would end in its watchdog tearing
    # the process down: the poll turns it into a RankFailure naming the peer instead.
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    start = time.monotonic()
    with pytest.raises(comm.RankFailure, match="sim rank 2 failed: no reply within 0.2 s"):
        comm.wait([_Request(polls=0), _Request(polls=None)], 0.2, peer=2, role="sim")
    assert time.monotonic() - start < 1.0
    comm.wait([_Request(polls=5)], 1.0, peer=2, role="sim")  # a reply in time passes


# ProcessGroupNCCL's dtypes (it has no 16-bit integer type).
NCCL_DTYPES = {torch.int8, torch.uint8, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
               torch.float64, torch.bool}


@pytest.mark.parametrize("post", ["isend", "irecv"])
def test_a_request_refused_for_a_closed_connection_is_the_peers_failure(monkeypatch, post):
    """Gloo refuses at once to post to a peer that has died. The caller's failure path (a
    checkpoint, one line naming the peer) must see that as it sees a failed wait."""
    def refuse(tensor, peer):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:39336.")

    monkeypatch.setattr(dist, post, refuse)
    with pytest.raises(comm.RankFailure) as failure:
        getattr(comm, post)([torch.zeros(3)], 1, "sim")
    assert (failure.value.rank, failure.value.role) == (1, "sim")
    assert failure.value.cause == "connection lost (the process exited or was killed)"


def test_every_dtype_that_travels_goes_as_one_nccl_sends():
    # The disaggregated wire: depth float16 or uint16 mm, vectors float32, flags bool, sim
    # seconds float64, command headers int64.
    for dtype in (torch.float16, torch.uint16, torch.float32, torch.bool, torch.float64, torch.int64):
        assert comm._wire(torch.zeros(2, 3, dtype=dtype)).dtype in NCCL_DTYPES, dtype


def test_phase_timer_waits_for_its_stream_not_the_whole_device(monkeypatch):
    """A device-wide sync would also wait for NCCL receives posted ahead of the wait."""
    from dexrl.runtime.collector import PhaseTimer

    class Stream:
        synced = 0

        def synchronize(self):
            Stream.synced += 1

    streams = {}
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: streams.setdefault(device, Stream()))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pytest.fail("the whole device was synchronized"))
    timer = PhaseTimer(torch.device("cuda", 1))
    timer("inference", 0.0)
    assert list(streams) == [torch.device("cuda", 1)] and Stream.synced == 1  # that GPU's stream


def _silent_under_nccl_worker(rank: int, port: int, out: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    comm.init("gloo", timeout_s=600.0)  # the default group keeps the start-up timeout, as NCCL's does
    dist.get_backend = lambda group=None: "nccl"  # comm routes as under NCCL (this process only)
    comm.tighten(2.0)
    if rank == 1:  # silent from here on: hung in its rollout
        deadline = time.time() + 60
        while not Path(out).exists() and time.time() < deadline:
            time.sleep(0.1)
        os._exit(0)
    start = time.monotonic()
    try:
        comm.all_reduce_min(torch.tensor([1]))  # the ADR vote after a rollout
        found = {"rank": "none"}
    except comm.RankFailure as exc:
        found = {"rank": exc.rank, "cause": exc.cause}
    found["seconds"] = time.monotonic() - start
    Path(out).write_text(json.dumps(found))
    os._exit(0)


def test_a_rank_hung_in_its_rollout_is_named_by_the_control_collective_under_nccl(tmp_path):
    out = tmp_path / "found.json"
    mp.spawn(_silent_under_nccl_worker, args=(comm.free_loopback_port(), str(out)), nprocs=2)
    found = json.loads(out.read_text())
    assert found["rank"] == 1 and found["cause"] == "no reply within 2 s", found
    assert found["seconds"] < 2 * 2 + 3, found  # collective timeout + the check-in window


@pytest.mark.parametrize("requested, device, gpus, local, chosen", [
    ("gloo", "cuda", 4, 2, "gloo"),  # an explicit backend stands
    ("nccl", "cpu", 0, 2, "nccl"),
    ("auto", "cpu", 4, 2, "gloo"),  # CPU worlds: gloo whatever the GPUs
    ("auto", "cuda", 2, 2, "nccl"),  # every local rank its own GPU
    ("auto", "cuda:0", 1, 2, "gloo"),  # two ranks would share one GPU, which NCCL refuses
])
def test_auto_backend_is_nccl_only_when_every_local_rank_has_its_own_gpu(monkeypatch, requested, device, gpus, local, chosen):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    assert comm.choose_backend(requested, device) == chosen


def test_the_launcher_reports_the_rank_that_failed_not_the_peers_that_stopped_for_it():
    from types import SimpleNamespace as Failure

    # Rank 0 noticed rank 1 gone and exited 3 (peer failed) before the launcher saw rank 1's exit 1.
    failures = {0: Failure(exitcode=3, timestamp=10), 1: Failure(exitcode=1, timestamp=11),
                2: Failure(exitcode=-9, timestamp=12)}
    assert comm.root_failure(failures, peer_failed_code=3)[0] == 1
    assert comm.root_failure(failures, peer_failed_code=None)[0] == 0  # no code known: the first
    # Every rank stopped for a peer (one the launcher did not see fail): the first of them.
    both = {0: Failure(exitcode=3, timestamp=11), 1: Failure(exitcode=3, timestamp=10)}
    assert comm.root_failure(both, peer_failed_code=3)[0] == 1


def test_a_failed_collective_is_a_peer_failure_unless_debugging(monkeypatch):
    """One line naming the data-parallel group by default; with DEXRL_DEBUG=1 the error itself,
    traceback and all, for a defect of this rank's own (e.g. a CPU tensor given to NCCL)."""
    @comm._collective
    def collective():
        raise RuntimeError("Tensors must be CUDA and dense")

    with pytest.raises(comm.RankFailure, match="Tensors must be CUDA and dense"):
        collective()
    monkeypatch.setenv("DEXRL_DEBUG", "1")
    with pytest.raises(RuntimeError, match="Tensors must be CUDA and dense") as caught:
        collective()
    assert not isinstance(caught.value, comm.RankFailure)
