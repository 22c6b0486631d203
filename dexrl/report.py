"""`dexrl report`: the paper's Table II (ADR Inc., % full ADR, success rate) over run directories,
grouped by (runtime, resolution) across seeds, plus a PNG of ADR progress against env steps.

A run directory is what `dexrl train` writes (see dexrl/runtime/logger.py): config.json =
{"git": ..., "config": {...}} and metrics.jsonl, one JSON object per iteration.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from dexrl.config.train import RUNTIMES
from dexrl.runtime.logger import read_metrics

PROGRESS_KEYS = ("adr_progress",)
FULL_KEYS = ("adr_full",)
SR_TAIL_FRACTION = 0.1  # SR = mean success_rate over the last 10% of iterations (at least 1)
PNG_NAME = "adr_progress.png"


@dataclass
class Run:
    path: Path
    runtime: str  # "single" | "dp" | "disagg"
    resolution: str  # "WxH" of the policy camera, or "state" for a state-input policy
    seed: int
    rows: list[dict] = field(repr=False)  # metrics.jsonl, sorted by iteration

    @property
    def group(self) -> tuple[str, str]:
        return self.runtime, self.resolution

    def _series(self, keys: tuple[str, ...]) -> list[tuple[int, float]]:
        """(env_steps, value) for every row that logged one of ``keys``."""
        out = []
        for row in self.rows:
            key = next((k for k in keys if k in row), None)
            if key is not None:
                out.append((int(row.get("env_steps", 0)), float(row[key])))
        return out

    @property
    def has_adr(self) -> bool:
        return bool(self._series(PROGRESS_KEYS))

    def adr_progress(self) -> list[tuple[int, float]]:
        return self._series(PROGRESS_KEYS)

    def final_adr_progress(self) -> float:
        """The last logged ADR progress; 0.0 for a run that logged none (trained without ADR)."""
        series = self._series(PROGRESS_KEYS)
        return series[-1][1] if series else 0.0

    def reached_full_adr(self) -> bool:
        return any(v >= 1.0 for _, v in self._series(FULL_KEYS))

    def success_rate(self) -> float:
        """Mean ``success_rate`` over the last 10% of the iterations that logged it (at least 1)."""
        values = [float(r["success_rate"]) for r in self.rows if "success_rate" in r]
        if not values:
            return 0.0
        tail = max(1, math.ceil(SR_TAIL_FRACTION * len(values)))
        return sum(values[-tail:]) / tail


def load_run(run_dir) -> Run:
    """Read one run directory; a folder that is not one, or a corrupt file, raises ValueError."""
    path = Path(run_dir)
    cfg_path, metrics_path = path / "config.json", path / "metrics.jsonl"
    missing = [p.name for p in (cfg_path, metrics_path) if not p.is_file()]
    if missing:
        raise ValueError(f"{path} is not a dexrl run directory: it has no {' or '.join(missing)} "
                         f"(pass the folder `dexrl train` wrote, e.g. runs/<preset>-<time>)")
    try:
        cfg = json.loads(cfg_path.read_text())["config"]
        runtime = str(cfg.get("runtime", "single"))
        seed = int(cfg.get("seed", 0))
        if cfg.get("policy_input") == "state":
            resolution = "state"
        else:
            camera = cfg["env"]["camera"]
            resolution = f"{int(camera['width'])}x{int(camera['height'])}"
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path} is not a dexrl run config ({type(e).__name__}: {e}); "
                         f"expected {{\"config\": {{\"runtime\", \"seed\", \"env\": {{\"camera\": ...}}}}}}") from None
    rows = read_metrics(metrics_path)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "iteration" not in row or "env_steps" not in row:
            raise ValueError(f"{metrics_path} row {number} is not a metrics row "
                             f"(a JSON object with 'iteration' and 'env_steps')")
    if not rows:
        raise ValueError(f"{metrics_path} is empty: the run logged no iteration yet")
    rows.sort(key=lambda r: r["iteration"])
    return Run(path=path, runtime=runtime, resolution=resolution, seed=seed, rows=rows)


def _resolution_key(resolution: str) -> tuple:
    """'state' first, then by pixel count (160x120 < 320x240 < 1280x960), then the text."""
    try:
        w, h = (int(x) for x in resolution.split("x"))
        return 1, w * h, resolution
    except ValueError:
        return 0, 0, resolution


def _runtime_key(runtime: str) -> tuple:
    return (RUNTIMES.index(runtime) if runtime in RUNTIMES else len(RUNTIMES), runtime)


def summarize(runs: list[Run]) -> list[dict]:
    """One row per (runtime, resolution) over seeds, sorted by resolution then runtime
    (single, dp, disagg). Fractions in 0..1:

    - adr_inc: mean over runs of the final ADR progress (no ADR metrics -> 0, counted in no_adr),
    - full_adr: share of runs whose adr_full ever reached 1,
    - sr: mean over the runs that reached full ADR of their success rate (`Run.success_rate`);
      0.0 when none did, as the paper reports it.
    """
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    summary = []
    for (runtime, resolution), members in groups.items():
        full = [r for r in members if r.reached_full_adr()]
        summary.append({
            "runtime": runtime,
            "resolution": resolution,
            "runs": len(members),
            "seeds": sorted(r.seed for r in members),
            "adr_inc": sum(r.final_adr_progress() for r in members) / len(members),
            "full_adr": len(full) / len(members),
            "n_full": len(full),
            "sr": sum(r.success_rate() for r in full) / len(full) if full else 0.0,
            "no_adr": sum(not r.has_adr for r in members),
        })
    summary.sort(key=lambda s: (_resolution_key(s["resolution"]), _runtime_key(s["runtime"])))
    return summary


def markdown_table(summary: list[dict]) -> str:
    """Table II style: Res. | Method | runs | ADR Inc. | % Full ADR | SR, with footnotes."""
    lines = ["| Res. | Method | runs | ADR Inc. | % Full ADR | SR |",
             "|---|---|---:|---:|---:|---:|"]
    for s in summary:
        mark = " †" if s["no_adr"] else ""
        lines.append(f"| {s['resolution']} | {s['runtime']} | {s['runs']} | {100 * s['adr_inc']:.1f}%{mark} "
                     f"| {100 * s['full_adr']:.0f}% | {100 * s['sr']:.1f}% |")
    lines += ["", f"ADR Inc.: mean over runs of the final ADR progress. SR: mean success rate "
              f"(fraction of worlds in the success region, averaged over the last "
              f"{100 * SR_TAIL_FRACTION:.0f}% of iterations) of the runs that reached full ADR; 0 when none did."]
    no_adr = sum(s["no_adr"] for s in summary)
    if no_adr:
        lines.append(f"† {no_adr} run(s) logged no ADR metrics (trained without ADR) and count as 0 ADR progress.")
    return "\n".join(lines) + "\n"


def plot_adr_progress(runs: list[Run], out_png) -> Path:
    """ADR progress against env steps: one line per run, one colour per (runtime, resolution).
    Runs without ADR metrics are drawn dotted at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted({r.group for r in runs}, key=lambda g: (_resolution_key(g[1]), _runtime_key(g[0])))
    cmap = plt.get_cmap("tab10")
    colour = {g: cmap(i % 10) for i, g in enumerate(order)}
    fig, ax = plt.subplots(figsize=(7, 4))
    labelled = set()
    for run in sorted(runs, key=lambda r: (order.index(r.group), r.seed)):
        series = run.adr_progress()
        if series:
            xs, ys, style = [x for x, _ in series], [y for _, y in series], "-"
        else:
            xs, ys, style = [r["env_steps"] for r in run.rows], [0.0] * len(run.rows), ":"
        label = None if run.group in labelled else f"{run.runtime} {run.resolution}"
        labelled.add(run.group)
        ax.plot(xs, ys, style, color=colour[run.group], label=label, linewidth=1.5)
    ax.set_xlabel("env steps")
    ax.set_ylabel("ADR progress (mean over parameters)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="runtime, resolution", title_fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def report(run_dirs, out_dir=None) -> tuple[str, Path]:
    """Load ``run_dirs``, return (Markdown table, PNG path); the PNG goes to ``out_dir`` or,
    by default, to the parent folder of the first run directory."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("dexrl report needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    out = Path(out_dir) if out_dir is not None else run_dirs[0].resolve().parent
    png = plot_adr_progress(runs, out / PNG_NAME)
    return markdown_table(summarize(runs)), png
