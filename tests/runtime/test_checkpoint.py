"""Checkpoint files: atomic writes, the newest main checkpoint, one clear error for anything else."""

import pytest
import torch

from dexrl.runtime.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint, set_aside_later


def test_save_is_atomic_and_loads_back(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoints" / "iter_000001.pt", {"config": {}, "x": torch.arange(3)})
    assert [p.name for p in path.parent.iterdir()] == ["iter_000001.pt"]  # no .tmp left behind
    payload, found = load_checkpoint(tmp_path)  # a run directory: its newest checkpoint
    assert found == path and torch.equal(payload["x"], torch.arange(3))


def test_a_write_that_fails_half_way_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    import dexrl.runtime.checkpoint as checkpoint

    path = save_checkpoint(tmp_path / "checkpoints" / "iter_000001.pt", {"config": {}, "x": torch.arange(3)})

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"config": {}, "x": torch.arange(5)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)[0]["x"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["iter_000001.pt"]  # the half-written file removed


def test_latest_is_the_newest_main_checkpoint_not_a_rank_shard(tmp_path):
    for name in ("iter_000009.pt", "iter_000010.pt", "iter_000010.rank1.pt", "iter_000011.rank1.pt"):
        save_checkpoint(tmp_path / "checkpoints" / name, {})
    assert latest_checkpoint(tmp_path).name == "iter_000010.pt"


def test_set_aside_moves_the_later_iterations_main_and_shards_and_keeps_each_branch(tmp_path):
    names = ("iter_000002.pt", "iter_000002.rank1.pt", "iter_000003.pt", "iter_000003.rank1.pt", "iter_000010.pt")
    for name in names:
        save_checkpoint(tmp_path / "checkpoints" / name, {})
    aside = set_aside_later(tmp_path, 2)
    assert aside == tmp_path / "checkpoints" / "abandoned-after-iter_000002"
    assert sorted(p.name for p in aside.iterdir()) == ["iter_000003.pt", "iter_000003.rank1.pt", "iter_000010.pt"]
    assert latest_checkpoint(tmp_path).name == "iter_000002.pt"  # the folder is not looked in
    assert set_aside_later(tmp_path, 2) is None  # nothing later now
    save_checkpoint(tmp_path / "checkpoints" / "iter_000003.pt", {})  # a second abandoned branch
    assert set_aside_later(tmp_path, 2).name == "abandoned-after-iter_000002.1"
    assert set_aside_later(tmp_path / "new-run", 0) is None  # no checkpoints folder yet


@pytest.mark.parametrize("make, says", [
    (lambda d: d / "missing.pt", "does not exist"),
    (lambda d: d, "no checkpoint in"),  # a run directory without checkpoints
    (lambda d: _torch_file(d / "other.pt", {"a": 1}), "is not a dexrl-checkpoint-v1 file"),
    (lambda d: _torch_file(d / "list.pt", [1, 2]), "is not a dexrl-checkpoint-v1 file"),
    # a data-parallel rank's shard (no config): `train --resume` and `eval` would meet a KeyError
    (lambda d: save_checkpoint(d / "iter_000010.rank1.pt", {"env": {}}), "rank's shard of environment state"),
])
def test_anything_else_is_one_clear_error(tmp_path, make, says):
    with pytest.raises(CheckpointError, match=says):
        load_checkpoint(make(tmp_path))


def _torch_file(path, obj):
    torch.save(obj, path)
    return path


class _Payload:
    def __reduce__(self):  # what a crafted pickle uses to run code on load
        return (print, ("ran code",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "dexrl-checkpoint-v1", "config": {}, "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    assert "ran code" not in capsys.readouterr().out
