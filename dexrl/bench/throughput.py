"""`dexrl bench throughput`: a short training run in any runtime, summarized from its
metrics.jsonl: env-steps/s, seconds per phase per iteration, bytes transferred per step."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from dexrl.runtime.logger import read_metrics

PHASES = ("physics", "render", "env", "sim", "transfer", "inference", "storage", "update")


def throughput_args(runtime: str, num_envs: int, resolution: str, iterations: int, preset: str, procs: int,
                    device: str, run_dir: Path, pipeline: bool = False, overlap_update: bool = False) -> list[str]:
    w, h = resolution.lower().split("x")
    args = ["train", "--preset", preset, "--runtime", runtime, "--num-envs", str(num_envs), "--max-iterations",
            str(iterations), "--device", device, "--run-dir", str(run_dir), "--set", f"env.camera.width={w}",
            "--set", f"env.camera.height={h}", "--set", f"checkpoint_every={iterations}"]
    if runtime == "disagg":
        args += ["--sim-ranks", str(procs)]
    elif runtime == "dp":
        args += ["--ranks", str(procs)]
    # Passed whatever the runtime, so that the run's config refuses what it cannot do.
    return args + (["--set", "pipeline=true"] if pipeline else []) + (["--set", "overlap_update=true"] if overlap_update else [])


def summarize(run_dir: Path, runtime: str, procs: int, skip: int = 1) -> dict:
    """Over the iterations after the first ``skip`` (kernel compilation, warm-up): seconds as
    means, rates as steps over seconds (every iteration runs the same steps, so a rate is the
    harmonic mean of the iterations' rates; their plain mean would favour fast iterations)."""
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")[skip:]
    if not rows:
        raise ValueError(f"no iteration to measure: the first {skip} is warm-up; run at least {skip + 1}")
    mean = lambda key: sum(r.get(key, 0.0) for r in rows) / len(rows)  # noqa: E731
    rate = lambda key: len(rows) / sum(1.0 / r[key] for r in rows)  # noqa: E731
    out = {"runtime": runtime, "processes": procs + (runtime == "disagg"),  # (the learner too)
           **({"sim_ranks": procs} if runtime == "disagg" else {}), "iterations_measured": len(rows),
           "env_steps_per_s": rate("env_steps_per_s"), "iteration_s": mean("time/iteration_s")}
    for phase in PHASES:
        key = f"time/{phase}_s"
        if any(key in r for r in rows):
            out[f"{phase}_s"] = mean(key)
    if "transfer_s" in out:  # issue 4's target at paper scale: <= 0.1 of the training time
        out["transfer_share"] = out["transfer_s"] / out["iteration_s"]
    if any("transfer/bytes_per_step" in r for r in rows):
        out["bytes_per_step"] = mean("transfer/bytes_per_step")
    if all("sims/sim_only_env_steps_per_s" in r for r in rows):
        # Issue 4's target: >= 0.8 of the sims' own rate, i.e. the sims seldom wait.
        out["sim_only_env_steps_per_s"] = rate("sims/sim_only_env_steps_per_s")
        out["fraction_of_sim_only"] = out["env_steps_per_s"] / out["sim_only_env_steps_per_s"]
    return out


def bench_throughput(runtime: str, num_envs: int, resolution: str, iterations: int, preset: str, procs: int,
                     device: str, pipeline: bool = False, overlap_update: bool = False) -> dict:
    from dexrl.cli import main

    if iterations < 2:
        raise ValueError("--iterations must be >= 2: the first (kernel builds, warm-up) is not measured")
    with tempfile.TemporaryDirectory(prefix="dexrl-bench-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        run_dir = Path(tmp) / "run"  # (the run's own report names this directory, gone afterwards)
        code = main(throughput_args(runtime, num_envs, resolution, iterations, preset, procs, device, run_dir, pipeline,
                                    overlap_update))
        if code != 0:
            raise RuntimeError(f"the benchmark's training run failed (exit code {code})")
        result = summarize(run_dir, runtime, procs)
    result.update(num_envs=num_envs, resolution=resolution, preset=preset, device=device, pipeline=pipeline,
                  overlap_update=overlap_update)
    return result
