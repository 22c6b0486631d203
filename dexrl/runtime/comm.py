"""Every torch.distributed call of dexrl lives here (and nowhere else).

NCCL when every rank has its own CUDA device, gloo otherwise. Point-to-point tensors travel
with non-blocking isend/irecv into preallocated buffers; a wait that outlives the fault
timeout raises RankFailure naming the peer. Waits poll the request's completion from the
host against that timeout (point-to-point under NCCL; collectives past start-up under both
backends, so the gloo runs of the tests take the same path): NCCL's own timeouts end in its
watchdog tearing the communicator (and, by torch's launcher default, the process) down, before
the rank could name its peer or write a checkpoint. The cost under NCCL: the host waits for
each data-parallel collective before it queues what follows (a sync per minibatch, where the
adaptive learning rate reads the KL anyway).
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Dtypes the backends do not reduce or send travel as bytes: bool as uint8, and uint16 (depth
# in millimetres) as two uint8 a value, since NCCL knows no 16-bit integer type.
_WIRE_VIEW = {torch.bool: torch.uint8, torch.uint16: torch.uint8}
# Start-up allowance for any rank (scene compilation and first kernel builds on a sim,
# building the trainer on a learner), whatever the fault timeouts: a cold cache takes minutes.
STARTUP_TIMEOUT_S = 1800.0
# NCCL errors (a peer gone) abort the communicators but leave the process to the caller
# ("clean-up only"): the request then fails, and the rank names its peer and writes its
# checkpoint, where torch's launcher default ("tear down") has the watchdog kill the process.
NCCL_ERROR_HANDLING = ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")


SILENT = "no reply within"  # how every cause of a peer that stopped answering begins


class RankFailure(RuntimeError):
    """A peer rank died or stopped answering. ``rank`` is None where the failed peer is not
    known (a collective over every rank)."""

    def __init__(self, rank: int | None, role: str, cause: str):
        global failing
        who = f"{role} rank {rank}" if rank is not None else f"a {role} peer"
        super().__init__(f"{who} failed: {cause}")
        self.rank, self.role, self.cause = rank, role, cause
        failing = True

    @property
    def silent(self) -> bool:
        """The peer stopped answering (hung or stopped), rather than its connection dropping."""
        return self.cause.startswith(SILENT)


# Set once this process has diagnosed a failed peer: it is winding down (writing its
# checkpoint) and must not be interrupted by the launcher's stop signal.
failing = False


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str


@dataclass(frozen=True)
class _Steady:
    """Data-parallel collectives once every rank is past start-up: a gloo group with the fault
    timeout (for the small control collectives under any backend, for all under gloo), that
    timeout for the host's polling of every collective, and the rendezvous store, where a
    timed-out rank checks in."""
    group: object  # dist.ProcessGroup
    timeout_s: float
    store: object  # dist.Store


_steady: _Steady | None = None


def launched() -> bool:
    """True inside a process started by torchrun / the elastic launcher."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def choose_backend(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    own_gpu = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() >= local
    return "nccl" if own_gpu else "gloo"


def init(backend: str = "auto", device: str = "cpu", timeout_s: float = 60.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables."""
    chosen = choose_backend(backend, device)
    if chosen == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(chosen, timeout=timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), chosen)


def shutdown() -> None:
    global _steady
    _steady = None
    if dist.is_initialized():
        dist.destroy_process_group()


def tighten(timeout_s: float) -> None:
    """Call on every rank at the same point, once each is past start-up (kernel builds, the
    first rollout): from then on a collective waits at most ``timeout_s`` for the slowest
    rank, and a rank that stays silent is named. NCCL's group keeps the start-up timeout (its
    watchdog would abort the process rather than raise); the host's polling (_finish) and the
    gloo group made here keep to ``timeout_s``."""
    global _steady
    if _steady is not None:
        return
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    # A client of the store the ranks met at (torchrun's agent, or rank 0's): it outlives a
    # stopped rank, so the others can still check in there.
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=timedelta(seconds=timeout_s))
    _steady = _Steady(group, timeout_s, dist.PrefixStore("dexrl/steady", client))


def _data_group():
    """The group of the collectives that move model-sized tensors: the backend's own (NCCL
    reduces on the GPUs), or the fault-timeout gloo group under gloo."""
    return _steady.group if _steady is not None and dist.get_backend() == "gloo" else None


def _control_group():
    """The group of the small per-iteration collectives (statistics, the ADR vote): gloo with
    the fault timeout once past start-up, under any backend. Under NCCL they are the first
    collectives after each rollout, so a rank hung in its simulation is named there."""
    return _steady.group if _steady is not None else None


def _finish(work) -> None:
    """Wait for a collective's request. Past start-up, a request that does not complete within
    the fault timeout means a silent peer: it is named (after the check-in at the store)."""
    if _steady is not None and not _completed_within(work, _steady.timeout_s):
        raise _silent_failure(_steady)
    work.wait()  # raises the backend's error; under NCCL, orders the current stream after it


def _completed_within(work, timeout_s: float) -> bool:
    """Poll ``work.is_completed()`` from the host for at most ``timeout_s``. Sleeps grow from
    20 us to 0.2 ms while a step's reply may come any moment (a millisecond's lag per step
    would cost a GPU run several percent), then to 10 ms once the wait has lasted a second (a
    sim waiting out the learner's update), so an idle rank leaves its core alone."""
    start = time.monotonic()
    deadline, pause = start + timeout_s, 2e-5
    while not work.is_completed():
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(pause, deadline - now))
        pause = min(2 * pause, 2e-4 if now - start < 1.0 else 1e-2)
    return True


def _wire(t: torch.Tensor) -> torch.Tensor:
    view = _WIRE_VIEW.get(t.dtype)
    return t.view(view) if view is not None else t


def isend(tensors: list[torch.Tensor], dst: int, role: str = "peer") -> list:
    return _post(dist.isend, [t.contiguous() for t in tensors], dst, role)


def irecv(buffers: list[torch.Tensor], src: int, role: str = "peer") -> list:
    """Receive into ``buffers`` (preallocated, contiguous), in the order they were sent."""
    return _post(dist.irecv, buffers, src, role)


def _post(post, tensors: list[torch.Tensor], peer: int, role: str) -> list:
    """Post one request per tensor. Gloo refuses to post to a peer whose connection has
    closed: that is the peer's failure, as it would be in wait."""
    try:
        return [post(_wire(t), peer) for t in tensors]
    except RuntimeError as exc:
        raise RankFailure(peer, role, _cause(exc, None)) from None


def wait(works: list, timeout_s: float, peer: int, role: str) -> None:
    """Wait for every request; a dead or silent peer becomes RankFailure within timeout_s."""
    # Gloo's point-to-point requests complete only inside wait(), which takes the timeout.
    poll = dist.get_backend() == "nccl"
    for work in works:
        try:
            if not (_completed_within(work, timeout_s) if poll else work.wait(timedelta(seconds=timeout_s))):
                raise RankFailure(peer, role, f"{SILENT} {timeout_s:g} s")
            if poll:
                work.wait()  # raises NCCL's error; orders the current stream after the request
        except RankFailure:
            raise
        except RuntimeError as exc:
            raise RankFailure(peer, role, _cause(exc, timeout_s)) from None


def _first_line(exc: RuntimeError) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _timed_out(exc: RuntimeError) -> bool:
    low = _first_line(exc).lower()
    return "timeout" in low or "timed out" in low


def _cause(exc: RuntimeError, timeout_s: float | None) -> str:
    """A backend's error as a short cause."""
    if _timed_out(exc):
        return f"{SILENT} {timeout_s:g} s" if timeout_s is not None else f"{SILENT} the group's timeout"
    cause = _first_line(exc)
    low = cause.lower()
    if "connection" in low and ("reset" in low or "closed" in low):
        return "connection lost (the process exited or was killed)"
    return cause


def _collective(fn):
    """A collective over every rank: a peer that died (or stayed silent past the group's
    timeout) becomes RankFailure, so the caller checkpoints and reports one line."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RankFailure:
            raise
        except RuntimeError as exc:  # gloo reports a closed connection as a plain RuntimeError
            if os.environ.get("DEXRL_DEBUG"):  # this rank's own defect shows its traceback
                raise
            if _steady is not None and _timed_out(exc):
                raise _silent_failure(_steady) from None
            raise RankFailure(None, "data-parallel", _cause(exc, None)) from None
    return wrapped


def _silent_failure(steady: _Steady) -> RankFailure:
    cause = f"{SILENT} {steady.timeout_s:g} s"
    silent = _silent_peers(steady)
    if len(silent) == 1:
        return RankFailure(silent[0], "dp", cause)
    who = f"ranks {', '.join(map(str, silent))} silent" if silent else "the silent rank is not known"
    return RankFailure(None, "data-parallel", f"{cause} ({who})")


def _silent_peers(steady: _Steady) -> list[int]:
    """After a collective timed out here: every healthy rank times out in it too and checks in
    at the store; the ranks that do not within the timeout are stuck elsewhere (hung, stopped)."""
    me, deadline = dist.get_rank(), time.monotonic() + steady.timeout_s
    waiting = {f"timed_out/{rank}": rank for rank in range(dist.get_world_size()) if rank != me}
    try:
        steady.store.set(f"timed_out/{me}", "1")
        while waiting and time.monotonic() < deadline:
            # check() does not block: the store's own timed wait logs a warning on every miss.
            time.sleep(0.1)
            waiting = {key: rank for key, rank in waiting.items() if not steady.store.check([key])}
    except RuntimeError:  # the store is gone too (hosted by the silent rank): unknown
        return []
    return sorted(waiting.values())


def wire_device() -> torch.device:
    """Where tensors must be to travel: this rank's GPU under NCCL, host memory under gloo
    (the group's real backend, whatever device a rank computes on)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def send_object(obj, dst: int, timeout_s: float = 60.0, role: str = "peer") -> None:
    """A picklable object (e.g. an environment's state) as length + bytes, under the fault
    timeout (torch's send_object_list has none)."""
    data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(wire_device())
    size = torch.tensor([data.numel()], dtype=torch.int64, device=data.device)
    wait(isend([size, data], dst, role), timeout_s, dst, role)


def recv_object(src: int, timeout_s: float = 60.0, role: str = "peer"):
    size = torch.zeros(1, dtype=torch.int64, device=wire_device())
    wait(irecv([size], src, role), timeout_s, src, role)
    data = torch.empty(int(size[0]), dtype=torch.uint8, device=size.device)
    wait(irecv([data], src, role), timeout_s, src, role)
    return pickle.loads(data.cpu().numpy().tobytes())


@_collective
def broadcast_module(module: torch.nn.Module, src: int) -> None:
    """Identical parameters and buffers on every rank."""
    for t in list(module.parameters()) + list(module.buffers()):
        _finish(dist.broadcast(t.data, src, group=_data_group(), async_op=True))


@_collective
def all_reduce_mean_grads(params: list[torch.nn.Parameter]) -> None:
    """Average .grad across ranks with one flattened all-reduce."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (P,)
    _finish(dist.all_reduce(flat, group=_data_group(), async_op=True))
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        if p.grad is None:
            p.grad = flat[offset:offset + n].view_as(p).clone()
        else:
            p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


@_collective
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    y = x.detach().to(wire_device(), torch.float32, copy=True)  # NCCL reduces CUDA tensors only
    _finish(dist.all_reduce(y, group=_data_group(), async_op=True))
    return (y / dist.get_world_size()).to(x.device)


@_collective
def all_gather_stack(x: torch.Tensor) -> torch.Tensor:
    """(…) on every rank -> (world_size, …) on every rank."""
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    _finish(dist.all_gather(out, x.contiguous(), group=_data_group(), async_op=True))
    return torch.stack(out)


@_collective
def all_gather_object(obj) -> list:
    """A small picklable object from every rank, in rank order, on every rank (a control
    collective: its group's timeout bounds it, as torch offers no asynchronous form)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_control_group())
    return out


@_collective
def all_reduce_min(x: torch.Tensor) -> torch.Tensor:
    group = _control_group()
    y = x.to(torch.device("cpu") if group is not None else wire_device(), copy=True)  # gloo: host memory
    _finish(dist.all_reduce(y, op=dist.ReduceOp.MIN, group=group, async_op=True))
    return y.to(x.device)


def free_loopback_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_LAUNCHER_LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.multiprocessing.spawn")


def root_failure(failures: dict, peer_failed_code: int | None):
    """(rank, failure) of the first rank to fail (``failures``: rank -> the launcher's
    ProcessFailure) that did not exit with ``peer_failed_code``, which a rank uses when it
    stopped because a peer failed; the first of those only if every rank did."""
    causes = {r: f for r, f in failures.items() if f.exitcode != peer_failed_code} or failures
    rank = min(causes, key=lambda r: causes[r].timestamp)
    return rank, causes[rank]


def launch_local(entrypoint, args: tuple, nprocs: int, rdzv_endpoint: str, run_id: str,
                 peer_failed_code: int | None = None) -> dict | None:
    """Start ``nprocs`` ranks of ``entrypoint(*args)`` on this machine with torch's elastic
    launcher (what torchrun uses). Returns None on success, else the first failure:
    {"rank", "exitcode", "signal", "pid"}, where a rank that exited with ``peer_failed_code``
    (it stopped because a peer failed) counts only if no rank failed otherwise. Ctrl-C and a
    failing rank stop every rank."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=run_id, rdzv_backend="c10d",
                          rdzv_endpoint=rdzv_endpoint, max_restarts=0, monitor_interval=0.2, start_method="spawn")
    # The launcher logs a failed rank as a traceback of its own monitoring code; the caller
    # reports the failure in one line instead.
    for name in _LAUNCHER_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as exc:
        rank, failure = root_failure(exc.failures, peer_failed_code)
        return {"rank": rank, "exitcode": failure.exitcode, "signal": failure.signal_name(), "pid": failure.pid}
    except (SignalException, KeyboardInterrupt) as exc:  # Ctrl-C / SIGTERM: the ranks are stopped
        return {"rank": -1, "exitcode": 130, "signal": getattr(getattr(exc, "sigval", None), "name", "SIGINT"),
                "pid": os.getpid()}
    return None
