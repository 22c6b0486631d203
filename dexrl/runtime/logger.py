"""Run directory: config.json (+ git hash), metrics.jsonl, TensorBoard events, curves PNG."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from dexrl.config.train import TrainConfig, dumps


def git_hash(here: Path = Path(__file__).resolve().parent) -> str:
    """The commit of the checkout at ``here`` (dexrl's own by default), with "-dirty" where
    tracked files differ from it (the code run is then not that commit's); "unknown" outside
    a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here)
        if not out.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], capture_output=True, timeout=5, cwd=here)
        return out.stdout.strip() + ("-dirty" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_text_atomic(path: Path, text: str) -> None:
    """The whole file or the old one: a crash mid-write must not leave half a file."""
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")  # writers may share a disk
    tmp.write_text(text)
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's rows. A last line without its newline that is not JSON is an append cut
    short (the run was killed mid-write): dropped. Any other bad line is an error."""
    lines = Path(path).read_text().split("\n")  # the last item is "" unless a write was cut short
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                break
            raise ValueError(f"{path} line {lineno} is not valid JSON ({e.msg}); remove or repair that line") from None
    return rows


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunLogger:
    """Writes one JSON object per iteration to metrics.jsonl and the same scalars to
    TensorBoard. On resume, lines from iterations at or after ``start`` are dropped first."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, start_iteration: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.run_dir / "config.json",
                          json.dumps({"git": git_hash(), "config": json.loads(dumps(cfg))}, indent=2))
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if self.metrics_path.exists():  # resumed: the iterations to come are logged again
            kept = [row for row in read_metrics(self.metrics_path) if row["iteration"] < start_iteration]
            write_text_atomic(self.metrics_path, "".join(json.dumps(row) + "\n" for row in kept))
        from torch.utils.tensorboard import SummaryWriter  # import late: it is slow to import

        self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_iteration or None)

    def log(self, row: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "iteration":
                self.tb.add_scalar(key, value, row["iteration"])

    def close(self) -> None:
        self.tb.close()
        plot_curves(self.run_dir)


def plot_curves(run_dir: Path) -> Path | None:
    """learning_curves.png: reward terms, success rate and losses against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(run_dir) / "metrics.jsonl"
    rows = read_metrics(path) if path.exists() else []
    if not rows:
        return None
    steps = [r["env_steps"] for r in rows]
    panels = [
        ("reward terms (mean per step)", [k for k in rows[-1] if k.startswith("reward/")]),
        ("success", ["success_rate", "episode/success"]),
        ("losses", [k for k in rows[-1] if k.startswith("loss/")]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            xs = [s for s, r in zip(steps, rows) if key in r]
            ax.plot(xs, [r[key] for r in rows if key in r], label=key.split("/")[-1])
        ax.set_title(title)
        ax.set_xlabel("env steps")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(run_dir) / "learning_curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
