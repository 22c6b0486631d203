"""Multi-process runs: start the ranks (or join as one under torchrun) and give each its role.

Disaggregated: ranks 0..K-1 simulate, rank K (the last) learns. Data-parallel: every rank
simulates and learns. Each rank writes ``ranks/<rank>.json`` (pid, role, device, host) into
the run directory at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
import uuid
from pathlib import Path

import torch

from dexrl.config.train import TrainConfig
from dexrl.runtime import comm
from dexrl.runtime.checkpoint import latest_checkpoint, load_checkpoint, resumable, without_episodes
from dexrl.runtime.logger import write_text_atomic

EXIT_PEER_FAILED = 3
THREADS_ENV = "DEXRL_TORCH_THREADS"


def world_size(cfg: TrainConfig) -> int:
    return cfg.sim_ranks + 1 if cfg.runtime == "disagg" else cfg.ranks


def start(argv: list[str], cfg: TrainConfig, run_dir: Path, rdzv_endpoint: str | None) -> int:
    """Parent process: launch the ranks on this machine, report the first failure in one line."""
    endpoint = rdzv_endpoint or f"127.0.0.1:{comm.free_loopback_port()}"
    report = Path(run_dir) / "ranks" / "failure.json"
    report.unlink(missing_ok=True)  # an earlier launch's diagnosis (this run resumed) is not this one's
    # A killed rank leaves semaphores behind; Python's resource tracker would otherwise print
    # a warning after our one-line report.
    os.environ.setdefault("PYTHONWARNINGS", "ignore:resource_tracker:UserWarning")
    # The spawned ranks inherit these. NCCL_ERROR_HANDLING: torch's launcher would otherwise
    # choose the mode in which NCCL's watchdog kills a rank on a peer's error (untested: no
    # multi-GPU machine so far).
    threads_override()  # a bad value stops here, in one line, not in every rank
    with _env_default(THREADS_ENV, str(learner_threads(cfg))), _env_default(*comm.NCCL_ERROR_HANDLING):
        failure = comm.launch_local(rank_main, (argv,), world_size(cfg), endpoint, uuid.uuid4().hex[:8],
                                    peer_failed_code=EXIT_PEER_FAILED)
    if failure is None:
        return 0
    if failure["rank"] < 0:
        print(f"dexrl train: interrupted ({failure['signal']}); every rank was stopped; continue with --resume {run_dir}",
              file=sys.stderr)
        return 130
    role, rank = _role(cfg, failure["rank"]), failure["rank"]
    sig = failure["signal"]
    cause = f"stopped: signal {sig}" if sig and sig != "<N/A>" else f"stopped: exit code {failure['exitcode']}"
    cause += f" (pid {failure['pid']})"
    if report.exists():  # a rank diagnosed a peer (e.g. a silent sim): that is the root cause
        found = json.loads(report.read_text())
        role, rank, cause = found["role"], found["rank"], f"failed: {found['cause']}"
    hint = ""
    try:
        hint = f"; last checkpoint {latest_checkpoint(run_dir)}; continue with --resume {run_dir}"
    except ValueError:
        pass
    print(f"dexrl train: error: {role} rank {rank} {cause}{hint}", file=sys.stderr)
    return EXIT_PEER_FAILED


def rank_main(argv: list[str]) -> int:
    """A rank started by ``start``: the same command line. An exception dexrl does not turn
    into one line (a defect) is printed with its traceback here, because the launcher logs a
    rank's exception only through the loggers comm.launch_local silences; the rank then exits
    at once, before its peers (which see it gone) exit naming it as their cause."""
    from dexrl.cli import main

    try:
        return main(argv)
    except Exception:
        import traceback

        sys.stderr.write(f"dexrl train: rank {os.environ.get('RANK', '?')} raised:\n{traceback.format_exc()}")
        sys.stderr.flush()
        os._exit(1)


def threads_override() -> int | None:
    """DEXRL_TORCH_THREADS, where the user set it: the intra-op threads of every learning
    process (single, the disaggregated learner, each data-parallel rank)."""
    value = os.environ.get(THREADS_ENV)
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV} must be a whole number >= 1, got {value!r}")
    return int(value)


@contextlib.contextmanager
def single_process_threads():
    """A single-process run on DEXRL_TORCH_THREADS threads where set, restored afterwards
    (tests and notebooks run several trainings in one process)."""
    before, override = torch.get_num_threads(), threads_override()
    if override is not None:
        torch.set_num_threads(override)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def learner_threads(cfg: TrainConfig) -> int:
    """Intra-op threads of each learning rank started on this machine where DEXRL_TORCH_THREADS
    is not set (threads_override). The disaggregated learner uses this process's count: CPU
    reductions depend on it, and a run must not change its numbers with the way it was launched
    (single == disagg, bit for bit). Data-parallel ranks, which all simulate and learn, share
    the cores: two ranks of two threads on two cores ran 2-3x slower than two ranks of one, and
    erratically (docs/results.md)."""
    if cfg.runtime == "dp":
        return max(1, (os.cpu_count() or 1) // cfg.ranks)
    return torch.get_num_threads()


@contextlib.contextmanager
def _env_default(name: str, value: str):
    """Set an environment variable unless the user did, for the block only: a later run in
    the same process (tests, notebooks) must choose its own."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _role(cfg: TrainConfig, rank: int) -> str:
    if cfg.runtime == "disagg":
        return "learner" if rank == cfg.sim_ranks else "sim"
    return "dp"


def check_devices(cfg: TrainConfig) -> None:
    """Before any rank starts: a device this machine lacks is one line here, rather than one
    failed rank and its peers' reports of it."""
    check_device("--device", cfg.env.device)
    if cfg.learner_device:
        check_device("learner_device", cfg.learner_device)
    if cfg.backend == "nccl":
        # NCCL moves tensors between GPUs, one GPU per rank: a CPU rank, or two ranks on one GPU,
        # would fail inside every rank.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])) if comm.launched() else world_size(cfg)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not cfg.env.device.startswith("cuda") or gpus < local:
            raise ValueError(f"--backend nccl needs a CUDA device of its own for each of the {local} ranks on this "
                             f"machine (--device {cfg.env.device}, {gpus} CUDA device(s)); use --backend gloo or auto")


def check_device(option: str, name: str) -> None:
    """One line for a device name that is not 'cpu' or 'cuda[:index]', or that this machine lacks."""
    if not re.fullmatch(r"(cpu|cuda)(:\d+)?", name):
        raise ValueError(f"{option} {name!r}: unknown device; use 'cpu' or 'cuda[:index]'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"{option} {name!r}: no CUDA device is available on this machine; use cpu")
    index = name.partition(":")[2]
    if name.startswith("cuda") and index and int(index) >= torch.cuda.device_count():
        raise RuntimeError(f"{option} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _device(cfg: TrainConfig, info: comm.DistInfo, requested: str) -> str:
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} requested but no CUDA device is available; use --device cpu")
        return f"cuda:{info.local_rank % torch.cuda.device_count()}"
    return requested


def _write_rank_file(run_dir: Path, info: comm.DistInfo, role: str, device: str) -> None:
    path = Path(run_dir) / "ranks" / f"{info.rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rank": info.rank, "pid": os.getpid(), "role": role, "device": device,
                                "hostname": socket.gethostname(), "backend": info.backend,
                                "torch_threads": torch.get_num_threads()}))


def report_failure(run_dir: Path, role: str, rank: int, exc: comm.RankFailure) -> None:
    """Name the failed peer in ranks/failure.json, which the launcher reports as the root
    cause, and end the peer if it is a sibling here. The learner and data-parallel ranks
    diagnose their peers. A sim rank sees only its learner: it names a learner that stayed
    silent past --learner-timeout (hung), which the launcher would otherwise report as the
    sim that gave up on it, unless the learner named a failed sim first. A dropped connection
    is not the learner's fault to a sim: the learner's connections can close once it has
    named a silent sim, while it writes its checkpoint, and a dead learner's own exit is
    what the launcher reports."""
    if role == "sim" and not exc.silent:
        return
    path = Path(run_dir) / "ranks" / "failure.json"
    if role != "sim" or not path.exists():
        # Whole: data-parallel ranks that name the same silent peer write it at once.
        write_text_atomic(path, json.dumps({"rank": exc.rank, "role": exc.role, "cause": exc.cause, "reported_by": rank}))
    _kill_if_here(run_dir, exc.rank)


def _kill_if_here(run_dir: Path, rank: int) -> None:
    """End a failed peer that runs on this machine. A hung or stopped rank cannot act on the
    launcher's SIGTERM, which it would otherwise wait out for 30 s before its SIGKILL."""
    try:
        peer = json.loads((Path(run_dir) / "ranks" / f"{rank}.json").read_text())
        # A peer on another node (the run directory on a shared file system) may have the
        # pid of a sibling here: containers number their processes alike.
        if peer["hostname"] != socket.gethostname():
            return
        # Only a sibling (started by the same launcher): never a process that reused the pid.
        pid = peer["pid"]
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if parent == os.getppid():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, KeyError, IndexError):  # gone already, not ours, or no /proc
        pass


def _stop_on_sigterm(signum, frame):
    # The launcher stops every rank when one fails; leave through the normal failure path so
    # the learner still writes its checkpoint (unless it is already doing so).
    if not comm.failing:
        raise comm.RankFailure(None, "launcher", "stopped by the launcher because another rank exited")


def run_rank(cfg: TrainConfig, run_dir: Path, resume: str | None) -> int:
    """Inside a launched process: join the group, play this rank's role."""
    info = comm.init(cfg.backend, cfg.env.device,
                     timeout_s=max(cfg.fault_timeout_s, cfg.learner_timeout_s, comm.STARTUP_TIMEOUT_S))
    if info.world_size != world_size(cfg):
        raise ValueError(f"{cfg.runtime} with these settings needs {world_size(cfg)} processes, "
                         f"torchrun started {info.world_size}")
    role = _role(cfg, info.rank)
    device = _device(cfg, info, cfg.env.device)
    # Sim ranks run batched elementwise work and leave the cores to physics; learning ranks
    # take the count learner_threads() chose in the launcher.
    torch.set_num_threads(1 if role == "sim" else threads_override() or torch.get_num_threads())
    _write_rank_file(run_dir, info, role, device)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        if role == "sim":
            from dexrl.runtime.disaggregated import SimRank

            SimRank(cfg, info.rank, cfg.sim_ranks, device).run()
        else:
            _learn(cfg, info, role, device, run_dir, resume)
    except comm.RankFailure as exc:
        if exc.role != "launcher":  # stopped by the launcher: it reports the rank that caused it
            # One write, so that lines from ranks sharing a terminal do not interleave.
            sys.stderr.write(f"dexrl train: error: rank {info.rank} ({role}): {exc}\n")
            sys.stderr.flush()
        if exc.rank is not None:
            report_failure(run_dir, role, info.rank, exc)
        os._exit(EXIT_PEER_FAILED)  # a peer is gone: leaving the group would wait for it
    comm.shutdown()
    return 0


def _learn(cfg: TrainConfig, info: comm.DistInfo, role: str, device: str, run_dir: Path, resume: str | None) -> None:
    if role == "learner":
        from dexrl.runtime.disaggregated import RemoteEnvs
        from dexrl.runtime.single import Trainer

        requested = cfg.learner_device or device
        # A bare "cuda" is resolved as --device is (this rank's GPU): torch would read it as the
        # current device, which is GPU 0 under gloo; an explicit index is the user's choice.
        learner_device = torch.device(_device(cfg, info, requested) if requested == "cuda" else requested)
        envs = RemoteEnvs(cfg, list(range(cfg.sim_ranks)), learner_device, cfg.fault_timeout_s)
        # The run's config keeps the sims' device: a resumed run must not move them.
        trainer = Trainer.build(cfg, env=envs, device=learner_device)
    else:
        from dexrl.runtime.data_parallel import build_rank

        trainer = build_rank(cfg, info, device)
    if resume:
        payload, path = load_checkpoint(resume)
        payload, warning = resumable(payload, cfg)
        if warning and trainer.is_logger:
            sys.stderr.write(f"dexrl train: warning: {warning}\n")
        if role == "dp" and info.rank > 0 and not warning:  # its own worlds' state is in its shard
            shard = path.with_name(path.stem + f".rank{info.rank}.pt")
            if shard.exists():
                payload = {**payload, **{k: v for k, v in load_checkpoint(shard, shard=True)[0].items() if k != "format"}}
            else:  # the rank died before writing it: fresh episodes, never rank 0's worlds
                payload = without_episodes(payload)
                sys.stderr.write(f"dexrl train: warning: rank {info.rank}: no {shard.name}; "
                                 "its worlds start fresh episodes\n")
        trainer.load_state_dict(payload)
    trainer.train(run_dir)
    if role == "learner":
        trainer.env.close()
