"""`dexrl bench throughput`: the summary of a run's metrics, and a real disaggregated run."""

import json

import pytest

from dexrl.bench.throughput import summarize
from dexrl.cli import main


def test_summary_skips_warm_up_and_relates_to_the_sims_own_rate(tmp_path):
    rows = [
        {"env_steps_per_s": 1.0, "time/iteration_s": 99.0, "sims/sim_only_env_steps_per_s": 1.0},  # warm-up
        {"env_steps_per_s": 300.0, "time/iteration_s": 2.0, "time/sim_s": 1.0, "time/update_s": 0.5, "time/transfer_s": 0.1,
         "transfer/bytes_per_step": 1000.0, "sims/sim_only_env_steps_per_s": 400.0},
        {"env_steps_per_s": 600.0, "time/iteration_s": 1.0, "time/sim_s": 0.5, "time/update_s": 0.3, "time/transfer_s": 0.2,
         "transfer/bytes_per_step": 1000.0, "sims/sim_only_env_steps_per_s": 800.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = summarize(tmp_path, "disagg", 2)
    # 600 steps an iteration (300/s for 2 s, 600/s for 1 s): 1200 steps in 3 s, not (300 + 600) / 2.
    assert out["iterations_measured"] == 2 and out["env_steps_per_s"] == 400.0 and out["iteration_s"] == 1.5
    assert out["sim_s"] == 0.75 and out["update_s"] == 0.4 and out["bytes_per_step"] == 1000.0
    # The sims' own rate likewise: 600 steps in 1.5 s + 0.75 s = 1600/3 per s; 400 of it is 0.75.
    assert out["sim_only_env_steps_per_s"] == pytest.approx(1600 / 3)
    assert out["fraction_of_sim_only"] == pytest.approx(0.75)
    # Transfer's share of the time: 0.3 s of 3 s.
    assert out["transfer_share"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no iteration to measure"):
        summarize(tmp_path, "disagg", 2, skip=3)


def test_disaggregated_overlapped_run_reports_its_share_of_the_sims_rate(capsys):
    args = ["bench", "throughput", "--runtime", "disagg", "--sim-ranks", "2", "--overlap-update", "--num-envs", "4",
            "--resolution", "16x12", "--iterations", "3", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["overlap_update"] and result["iterations_measured"] == 2
    assert (result["processes"], result["sim_ranks"]) == (3, 2)  # the learner is a process too
    # Every step took the sims some time, and no run beats its own simulators.
    assert result["sim_only_env_steps_per_s"] > 0 and 0 < result["fraction_of_sim_only"] <= 1.0
    assert result["bytes_per_step"] > 0 and result["update_s"] > 0 and 0 < result["transfer_share"] < 1
