"""Checkpoints: atomic writes, clear errors for anything that is not one of ours."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

FORMAT = "dexrl-checkpoint-v1"
MAIN_NAME = re.compile(r"iter_\d+\.pt")
ANY_NAME = re.compile(r"iter_(\d+)(\.rank\d+)?\.pt")  # a main checkpoint or a data-parallel rank's shard


class CheckpointError(ValueError):
    """A path that is not a readable dexrl checkpoint."""


def save_checkpoint(path: Path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically and durably: a write that fails half way (a full
    disk, a crash) leaves the old file, and the new one is on disk before its name points at it,
    so a host crash cannot leave an empty file under a checkpoint's name for --resume to pick."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; elsewhere a folder cannot be opened so)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_weights(model: torch.nn.Module, weights: dict) -> None:
    """``model.load_state_dict`` with one line where the checkpoint's network is another (an
    earlier dexrl's architecture, a config edited by hand)."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise CheckpointError(f"the checkpoint's network does not fit the one its config builds "
                              f"(written by another dexrl version?): {detail}") from None


def to_host(tree):
    """A copy of a (nested dict / list of) tensors in host memory."""
    if isinstance(tree, dict):
        return {k: to_host(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_host(v) for v in tree)
    return tree.detach().to("cpu", copy=True) if isinstance(tree, torch.Tensor) else tree


def latest_checkpoint(run_dir: Path) -> Path:
    """The run's newest main checkpoint (``iter_NNNNNN.pt``; a data-parallel rank's shard of
    environment state, ``iter_NNNNNN.rankR.pt``, is not one)."""
    ckpts = sorted(p for p in Path(run_dir, "checkpoints").glob("iter_*.pt")
                   if MAIN_NAME.fullmatch(p.name))
    if not ckpts:
        raise CheckpointError(f"no checkpoint in {run_dir}/checkpoints; pass a .pt file or a run directory that has one")
    return ckpts[-1]


def set_aside_later(run_dir: Path, iteration: int) -> Path | None:
    """A run resumed from an earlier checkpoint than its last starts a new branch there: the
    checkpoints (main and rank shards) of iterations after ``iteration`` belong to the branch it
    abandons. They move to ``checkpoints/abandoned-after-iter_NNNNNN[.K]/``, so that neither
    --resume nor eval picks one of them later, and nothing is deleted. Returns that folder, or
    None when there was nothing to move."""
    folder = Path(run_dir, "checkpoints")
    names = [(p, ANY_NAME.fullmatch(p.name)) for p in folder.iterdir()] if folder.is_dir() else []
    later = [p for p, m in names if m and int(m.group(1)) > iteration]
    if not later:
        return None
    aside, k = folder / f"abandoned-after-iter_{iteration:06d}", 1
    while aside.exists():
        aside, k = folder / f"abandoned-after-iter_{iteration:06d}.{k}", k + 1
    aside.mkdir()
    for path in sorted(later):
        path.rename(aside / path.name)
    return aside


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", shard: bool = False) -> tuple[dict, Path]:
    """A checkpoint file, or a run directory (its latest checkpoint). Returns (payload, file).
    ``shard``: the file is a data-parallel rank's shard of environment state, which holds no
    config; a user who names one where a checkpoint is meant gets one line, not a KeyError."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = latest_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        # weights_only: a checkpoint holds tensors and plain containers only, so loading one
        # (from a colleague, a download) cannot run code, as a general pickle could.
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, ...
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}); "
                              "it may be truncated or not a dexrl checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a {FORMAT} file")
    if not shard and "config" not in payload:
        raise CheckpointError(f"{str(path)!r} is one data-parallel rank's shard of environment state, not a "
                              "checkpoint; pass the iteration's iter_NNNNNN.pt or the run directory")
    return payload, path


def resumable(payload: dict, cfg) -> tuple[dict, str | None]:
    """The checkpoint's payload for a run of ``cfg``, and a warning where it drops something:
    its environment state, if the checkpoint's worlds were split over processes differently
    (weights, optimizer, normalizers and ADR carry over; episodes start afresh)."""
    from dexrl.config.train import TrainConfig, from_dict, world_split

    saved, now = world_split(from_dict(TrainConfig, payload["config"])), world_split(cfg)
    if saved == now:
        return payload, None
    return without_episodes(payload), (f"the checkpoint's worlds were split as {saved}, this run's as {now}: "
                                       "episodes start afresh")


def without_episodes(payload: dict) -> dict:
    """The payload less the environment's and the collector's state, and its random number
    generators' (another rank's, or another layout's): loading it starts fresh episodes, with
    exploration noise of the loading rank's own (Trainer.load_state_dict)."""
    return {k: v for k, v in payload.items() if k not in ("env", "collector", "torch_rng", "cuda_rng")}
