"""`dexrl train`: the run's config from a preset or a checkpoint plus the command line, its
run directory, and the runtime that trains it."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from dexrl.config.env import parse_resolution


def train_config(a):
    """The resolved config and the checkpoint payload to resume from (or None)."""
    from dexrl.config.train import TrainConfig, apply_overrides, from_dict, network_settings, preset
    from dexrl.runtime.checkpoint import load_checkpoint

    payload, path = (load_checkpoint(a.resume) if a.resume else (None, None))
    if payload is None:
        cfg = preset(a.preset or "quickstart")
    else:
        try:
            cfg = from_dict(TrainConfig, payload["config"])
        except ValueError as exc:
            raise ValueError(f"checkpoint {path} holds a config this dexrl version cannot read ({exc})") from None
        if a.preset not in (None, cfg.preset):
            raise ValueError(f"--preset {a.preset}: a resumed run keeps its own config (preset {cfg.preset}); "
                             "change single options with --set, or start a new run")
    overrides = list(a.set)
    if a.resolution is not None:
        w, h = parse_resolution(a.resolution)
        overrides += [f"env.camera.width={w}", f"env.camera.height={h}"]
    flags = (("num_envs", "env.num_envs"), ("max_iterations", "max_iterations"), ("device", "env.device"),
             ("runtime", "runtime"), ("sim_ranks", "sim_ranks"), ("ranks", "ranks"), ("backend", "backend"),
             ("fault_timeout", "fault_timeout_s"), ("learner_timeout", "learner_timeout_s"), ("adr", "adr"))
    for flag, key in flags:
        if getattr(a, flag) is not None:
            overrides.append(f"{key}={getattr(a, flag)}")
    if a.seed is not None:
        overrides += [f"seed={a.seed}", f"env.seed={a.seed}"]
    trained = network_settings(cfg)
    cfg = apply_overrides(cfg, overrides)
    if payload is not None:
        _check_same_network(trained, network_settings(cfg))
    cfg = _absolute_paths(cfg, robot=payload is None)
    # Options of the multi-process runtimes are refused where they would be ignored.
    for flag, runtimes in (("sim_ranks", ("disagg",)), ("ranks", ("dp",)), ("learner_timeout", ("disagg",)),
                           ("backend", ("dp", "disagg")), ("fault_timeout", ("dp", "disagg")),
                           ("rdzv_endpoint", ("dp", "disagg"))):
        if getattr(a, flag) is not None and cfg.runtime not in runtimes:
            raise ValueError(f"--{flag.replace('_', '-')} needs --runtime {' or '.join(runtimes)} "
                             f"(this run's runtime: {cfg.runtime})")
    if payload is not None and payload["iteration"] >= cfg.max_iterations:
        raise ValueError(f"{path} is at iteration {payload['iteration']}, and --max-iterations counts from the run's "
                         f"start ({cfg.max_iterations}): pass more to continue")
    return cfg, payload, path


def _absolute_paths(cfg, robot: bool):
    """The run's mesh folder (and, for a new run, its robot MJCF) as absolute paths, so that
    config.json means the same files when the run is resumed or evaluated from elsewhere. A
    resumed run keeps its robot path as saved: it is part of the network's settings."""
    env = cfg.env
    if env.objects.mesh_dir:
        env = replace(env, objects=replace(env.objects, mesh_dir=str(Path(env.objects.mesh_dir).expanduser().resolve())))
    if robot and env.robot_xml:
        env = replace(env, robot_xml=str(Path(env.robot_xml).expanduser().resolve()))
    return replace(cfg, env=env)


def _check_same_network(saved: dict, now: dict) -> None:
    changed = [f"{key} {saved[key]} -> {now[key]}" for key in saved if saved[key] != now[key]]
    if changed:
        raise ValueError(f"a resumed run keeps the network its checkpoint was trained with, and "
                         f"{', '.join(changed)} would change it; start a new run instead")


def _run_dir(a, cfg, checkpoint_path) -> Path:
    from dexrl.runtime.logger import default_run_dir

    if a.run_dir:
        return Path(a.run_dir)
    if checkpoint_path is not None:
        return checkpoint_path.parent.parent
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return Path("runs") / f"{cfg.preset}-{run_id}" if run_id else default_run_dir(cfg)


def _without_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == name:
            skip = True
        elif not x.startswith(name + "="):
            out.append(x)
    return out


def _check_fresh(run_dir: Path, checkpoint_path: Path | None) -> None:
    """A run directory with checkpoints is continued with --resume, never written over: a new
    run would leave the old run's later checkpoints beside its own, and --resume would pick
    one of them."""
    from dexrl.runtime.checkpoint import CheckpointError, latest_checkpoint

    if checkpoint_path is not None and checkpoint_path.parent.parent.resolve() == run_dir.resolve():
        return
    try:
        found = latest_checkpoint(run_dir)
    except CheckpointError:
        return
    raise ValueError(f"{run_dir} already holds a run (checkpoint {found.name}); continue it with "
                     f"--resume {run_dir}, or pass another --run-dir")


def cmd_train(a) -> int:
    from dexrl.runtime import comm

    cfg, payload, path = train_config(a)
    if a.print_config:
        from dexrl.config.train import dumps

        print(dumps(cfg))
        return 0
    run_dir = _run_dir(a, cfg, path)
    _check_fresh(run_dir, path)
    if cfg.runtime != "single":
        from dexrl.runtime import launch

        launch.check_devices(cfg)
        if comm.launched():
            return launch.run_rank(cfg, run_dir, a.resume)
        argv = _without_option(a.argv, "--run-dir") + ["--run-dir", str(run_dir)]
        code = launch.start(argv, cfg, run_dir, a.rdzv_endpoint)
        if code == 0:
            print(f"run directory: {run_dir}")
        return code
    from dexrl.runtime.launch import single_process_threads

    with single_process_threads():
        return _train_single(cfg, payload, run_dir)


def _train_single(cfg, payload: dict | None, run_dir: Path) -> int:
    from dexrl.runtime.checkpoint import resumable
    from dexrl.runtime.single import Interrupted, Trainer

    trainer = Trainer.build(cfg)
    if payload is not None:
        payload, warning = resumable(payload, cfg)
        if warning:
            print(f"dexrl train: warning: {warning}", file=sys.stderr)
        trainer.load_state_dict(payload)
        print(f"resuming {run_dir} at iteration {trainer.iteration}")
    try:
        trainer.train(run_dir)
    except Interrupted as stop:
        print(f"dexrl train: interrupted after iteration {stop.iteration}, saved to {stop.checkpoint}; "
              f"continue with: dexrl train --resume {run_dir}", file=sys.stderr)
        return 130
    print(f"run directory: {run_dir}")
    return 0
