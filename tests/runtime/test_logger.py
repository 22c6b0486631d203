"""metrics.jsonl: a run killed mid-append leaves a torn last line that must not block --resume."""

import json

import pytest

from dexrl.config.train import preset
from dexrl.runtime.logger import RunLogger, read_metrics

ROWS = [{"iteration": i, "env_steps": 10 * i} for i in range(3)]


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_a_torn_last_line_is_dropped_and_a_bad_one_elsewhere_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, ROWS, tail='{"iteration": 3, "env_st')  # the append cut short: no newline
    assert read_metrics(path) == ROWS
    _write(path, ROWS[:1], tail='{"iteration": 1, "env_st\n' + json.dumps(ROWS[2]) + "\n")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_metrics(path)


def test_a_resumed_run_keeps_the_earlier_rows_of_a_torn_file(tmp_path):
    _write(tmp_path / "metrics.jsonl", ROWS, tail='{"iteration": 3, "env_st')
    logger = RunLogger(tmp_path, preset("quickstart"), start_iteration=2)
    logger.tb.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == ROWS[:2]
    assert json.loads((tmp_path / "config.json").read_text())["config"]["preset"] == "quickstart"
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writes left no temporary file


def test_git_hash_says_when_the_code_is_not_the_commit(tmp_path):
    import subprocess

    from dexrl.runtime.logger import git_hash

    assert git_hash(tmp_path) == "unknown"  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    (tmp_path / "a.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "a.py"], ["commit", "-q", "-m", "a"]):
        subprocess.run(git + args, check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "untracked.txt").write_text("notes")  # not code of the commit's: still clean
    assert git_hash(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_hash(tmp_path) == head + "-dirty"
