"""dexrl.report: Table II numbers over hand-written run directories, the Markdown, the PNG, errors."""

import json

import pytest

from dexrl.report import load_run, markdown_table, report, summarize


def write_run(root, name, *, runtime, width, height, seed, rows, policy_input="depth"):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    cfg = {"runtime": runtime, "seed": seed, "policy_input": policy_input,
           "env": {"camera": {"width": width, "height": height}}}
    (run_dir / "config.json").write_text(json.dumps({"git": "abc123", "config": cfg}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def rows(n, success, progress=None, full=None):
    """n iterations of 1000 env steps; success/progress/full: lists of length n (or None)."""
    out = []
    for i in range(n):
        row = {"iteration": i, "env_steps": 1000 * (i + 1), "success_rate": success[i], "episode/success": 0.0}
        if progress is not None:
            row["adr_progress"] = progress[i]
            row["adr_full"] = full[i]
            row["adr_param/friction"] = progress[i]
        out.append(row)
    return out


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    # A: disagg 160x120 seed 0, 20 iterations; progress 0.05 .. 1.0, full from iteration 19.
    # The last 10% of 20 iterations = 2 rows: success 0.40, 0.44 -> SR 0.42.
    write_run(root, "disagg-s0", runtime="disagg", width=160, height=120, seed=0,
              rows=rows(20, [0.1] * 18 + [0.40, 0.44], [0.05 * (i + 1) for i in range(20)], [0] * 19 + [1]))
    # B: disagg 160x120 seed 1, stops at progress 0.5, never full; its high success is ignored.
    write_run(root, "disagg-s1", runtime="disagg", width=160, height=120, seed=1,
              rows=rows(10, [0.9] * 10, [0.05 * (i + 1) for i in range(10)], [0] * 10))
    # C: dp 160x120 seed 0, final progress 0.38, never full.
    write_run(root, "dp-s0", runtime="dp", width=160, height=120, seed=0,
              rows=rows(5, [0.5] * 5, [0.1, 0.2, 0.3, 0.35, 0.38], [0] * 5))
    # D: dp 160x120 seed 1, full at iteration 8 (stays full); 10% of 10 iterations = 1 row: SR 0.6.
    write_run(root, "dp-s1", runtime="dp", width=160, height=120, seed=1,
              rows=rows(10, [0.2] * 9 + [0.6], [0.1 * (i + 1) for i in range(9)] + [1.0], [0] * 8 + [1, 1]))
    # E: dp 320x240, trained without ADR: no adr/* keys at all.
    write_run(root, "dp-320", runtime="dp", width=320, height=240, seed=0, rows=rows(4, [0.3] * 4))
    return root


NAMES = ["disagg-s0", "disagg-s1", "dp-s0", "dp-s1", "dp-320"]


def test_load_run_reads_config_and_rows(runs_root):
    run = load_run(runs_root / "disagg-s1")
    assert (run.runtime, run.resolution, run.seed, len(run.rows)) == ("disagg", "160x120", 1, 10)
    assert run.path == runs_root / "disagg-s1"


def test_summary_matches_hand_computed_table(runs_root):
    summary = summarize([load_run(runs_root / n) for n in NAMES])
    # Sorted by resolution (pixel count), then runtime in single, dp, disagg order.
    assert [(s["resolution"], s["runtime"]) for s in summary] == [
        ("160x120", "dp"), ("160x120", "disagg"), ("320x240", "dp")]
    dp160, disagg160, dp320 = summary
    # dp 160x120: ADR Inc. = (0.38 + 1.0) / 2 = 0.69; full 1 of 2 = 0.5; SR = D's 0.6.
    assert dp160["runs"] == 2 and dp160["seeds"] == [0, 1]
    assert dp160["adr_inc"] == pytest.approx(0.69)
    assert dp160["full_adr"] == pytest.approx(0.5)
    assert dp160["sr"] == pytest.approx(0.6)
    # disagg 160x120: ADR Inc. = (1.0 + 0.5) / 2 = 0.75; full 1 of 2 = 0.5; SR = A's (0.40 + 0.44) / 2 = 0.42.
    assert disagg160["runs"] == 2
    assert disagg160["adr_inc"] == pytest.approx(0.75)
    assert disagg160["full_adr"] == pytest.approx(0.5)
    assert disagg160["sr"] == pytest.approx(0.42)
    # dp 320x240: no ADR metrics -> progress 0, never full, SR 0 (the paper's convention), 1 run without ADR.
    assert (dp320["runs"], dp320["adr_inc"], dp320["full_adr"], dp320["sr"], dp320["no_adr"]) == (1, 0.0, 0.0, 0.0, 1)


def test_report_writes_png_and_markdown_rows(runs_root, tmp_path):
    markdown, png = report([runs_root / n for n in NAMES])
    assert png == runs_root / "adr_progress.png"  # default: the first run dir's parent
    assert png.is_file() and png.stat().st_size > 1000
    assert "| Res. | Method | runs | ADR Inc. | % Full ADR | SR |" in markdown
    assert "| 160x120 | dp | 2 | 69.0% | 50% | 60.0% |" in markdown
    assert "| 160x120 | disagg | 2 | 75.0% | 50% | 42.0% |" in markdown
    assert "| 320x240 | dp | 1 | 0.0% † | 0% | 0.0% |" in markdown
    assert "† 1 run(s) logged no ADR metrics" in markdown
    body = [ln for ln in markdown.splitlines() if ln.startswith("| ") and "x" in ln.split("|")[1]]
    assert [ln.split("|")[1:3] for ln in body] == [
        [" 160x120 ", " dp "], [" 160x120 ", " disagg "], [" 320x240 ", " dp "]]

    _, png2 = report([runs_root / "dp-s0"], out_dir=tmp_path / "out")
    assert png2 == tmp_path / "out" / "adr_progress.png" and png2.stat().st_size > 0


def test_no_footnote_without_adr_less_runs_and_state_resolution(tmp_path):
    run_dir = write_run(tmp_path, "state", runtime="single", width=80, height=60, seed=3, policy_input="state",
                        rows=rows(2, [0.5, 0.5], [0.5, 1.0], [0, 1]))
    summary = summarize([load_run(run_dir)])
    assert summary[0]["resolution"] == "state"
    table = markdown_table(summary)
    assert "| state | single | 1 | 100.0% | 100% | 50.0% |" in table and "†" not in table


def test_bad_run_dirs_raise_value_error_naming_the_path(tmp_path, runs_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}.*not a dexrl run directory.*config.json or metrics.jsonl"):
        load_run(empty)
    with pytest.raises(ValueError, match="not a dexrl run directory"):
        load_run(tmp_path / "missing")

    no_rows = runs_root / "dp-s0"
    (no_rows / "metrics.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=f"{no_rows / 'metrics.jsonl'} is empty"):
        load_run(no_rows)

    corrupt = runs_root / "dp-s1"
    lines = (corrupt / "metrics.jsonl").read_text().splitlines()
    (corrupt / "metrics.jsonl").write_text("\n".join(lines[:2] + ['{"iteration": 2, "env_st']) + "\n")
    with pytest.raises(ValueError, match=f"{corrupt / 'metrics.jsonl'} line 3 is not valid JSON"):
        load_run(corrupt)

    bad_cfg = runs_root / "dp-320"
    (bad_cfg / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=f"{bad_cfg / 'config.json'} is not a dexrl run config"):
        load_run(bad_cfg)

    with pytest.raises(ValueError, match="at least one run directory"):
        report([])


def test_success_rate_tail_rounds_up(tmp_path):
    # 15 iterations: 10% is 1.5 rows, taken as 2: (0.3 + 0.9) / 2 = 0.6 (one row would give 0.9).
    run_dir = write_run(tmp_path, "r", runtime="single", width=80, height=60, seed=0,
                        rows=rows(15, [0.0] * 13 + [0.3, 0.9]))
    assert load_run(run_dir).success_rate() == pytest.approx(0.6)


def test_report_command_on_a_bad_directory_is_one_line(tmp_path, capsys):
    from dexrl.cli import main

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dexrl report: error:") and "not a dexrl run directory" in err[0]
