"""The `dexrl` command: one way in to every job."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from dexrl import __version__
from dexrl.config.env import CameraConfig, EnvConfig, parse_resolution
from dexrl.config.rl import IMAGE_STORAGE
from dexrl.sim.objects import ObjectSetConfig


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (the first iteration, warm-up, is not measured), got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# argparse names the type in its message: "invalid positive integer value: 'x'".
_positive_int.__name__, _positive_float.__name__, _at_least_two.__name__ = "positive integer", "positive number", "integer"


def _env_args(p: argparse.ArgumentParser, num_envs: int, resolution: str) -> None:
    g = p.add_argument_group("environment")
    g.add_argument("--num-envs", type=int, default=num_envs, help="worlds simulated in parallel (default %(default)s)")
    g.add_argument("--resolution", default=resolution, help="camera WIDTHxHEIGHT: 80x60 (CPU), 160x120, 320x240 (default %(default)s)")
    g.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default %(default)s)")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds the worlds' random draws; the object set is the same for every seed (default %(default)s)")
    g.add_argument("--action-space", choices=("joint_delta", "palm_synergy"), default="joint_delta",
                   help="23 joint-target deltas, or palm pose + 5 hand synergies through IK (default %(default)s)")
    g.add_argument("--objects", choices=("train", "eval"), default="train",
                   help="procedural object split; eval is held out (default %(default)s)")
    g.add_argument("--num-objects", type=int, default=64, help="objects in the set (default %(default)s)")
    g.add_argument("--mesh-dir", help="a folder of .obj/.stl objects to use instead of the procedural set")
    g.add_argument("--mesh-scale", type=_positive_float, default=1.0,
                   help="metres per mesh-file unit (0.001 for millimetres; default %(default)s)")
    g.add_argument("--robot-xml", help="a robot MJCF following dexrl's naming contract (README)")
    g.add_argument("--episode-s", type=float, default=10.0, help="episode length in seconds (default %(default)s)")


def _check_num_objects(a: argparse.Namespace, objects: ObjectSetConfig) -> None:
    if objects.mesh_dir and _given(a, "--num-objects"):
        raise ValueError("--num-objects sizes the procedural set; with a mesh folder the objects are its files")


def env_config(a: argparse.Namespace, **overrides) -> EnvConfig:
    w, h = parse_resolution(a.resolution)
    cfg = EnvConfig(
        num_envs=a.num_envs, device=a.device, seed=a.seed, action_space=a.action_space, episode_s=a.episode_s,
        camera=CameraConfig(width=w, height=h), robot_xml=a.robot_xml,
        objects=ObjectSetConfig(num_objects=a.num_objects, split=a.objects, mesh_dir=a.mesh_dir,
                               mesh_scale=a.mesh_scale),
    )
    _check_num_objects(a, cfg.objects)
    return replace(cfg, **overrides)


def _print_table(title: str, row: dict) -> None:
    width = max(len(k) for k in row)
    print(title)
    for k, v in row.items():
        print(f"  {k:<{width}}  {v:,.3f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def _check_named_policy(policy: str, command: str) -> None:
    """--policy names a built-in policy; a path there is a checkpoint meant for --checkpoint."""
    from dexrl.play import POLICIES

    if policy not in POLICIES and Path(policy).expanduser().exists():
        raise ValueError(f"--policy takes a built-in policy's name ({', '.join(POLICIES)}); to {command} the checkpoint "
                         f"{policy!r} use: dexrl eval --checkpoint {policy}"
                         + (" --episodes 1 --video out/play.mp4" if command == "film" else ""))


def cmd_play(a) -> None:
    from dexrl.play import play

    _check_named_policy(a.policy, "film")
    cfg = env_config(a, stereo_rgb=True)
    out = play(cfg, a.policy, a.video, a.seconds)
    print(f"wrote {out}")


def _train_config(a):
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

    cfg, payload, path = _train_config(a)
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


def _given(a, flag: str) -> bool:
    """The user wrote ``flag`` rather than leaving its default (the parser takes no abbreviations)."""
    return any(t == flag or t.startswith(flag + "=") for t in a.argv)


def _checkpoint_env(a, trained: EnvConfig) -> EnvConfig:
    """A checkpoint's environment for evaluation. The options that leave the network's inputs
    and outputs alone may change (worlds, device, seed, objects, episode length); those that
    do not (camera, action space, robot) must match, else one clear error."""
    w, h = parse_resolution(a.resolution)
    fixed = {"--resolution": (f"{w}x{h}", f"{trained.camera.width}x{trained.camera.height}"),
             "--action-space": (a.action_space, trained.action_space),
             "--robot-xml": (a.robot_xml, trained.robot_xml or "the built-in robot")}
    for flag, (asked, used) in fixed.items():
        if _given(a, flag) and asked != used:
            raise ValueError(f"{flag} {asked} does not match the checkpoint's environment ({used}), "
                             f"which the policy's network is built for: leave {flag} out")
    objects = trained.objects
    for flag, field in (("--objects", "split"), ("--num-objects", "num_objects"), ("--mesh-dir", "mesh_dir"),
                        ("--mesh-scale", "mesh_scale")):
        if _given(a, flag):
            objects = replace(objects, **{field: getattr(a, flag[2:].replace("-", "_"))})
    _check_num_objects(a, objects)
    episode_s = a.episode_s if _given(a, "--episode-s") else trained.episode_s
    return replace(trained, num_envs=a.num_envs, device=a.device, seed=a.seed, objects=objects, episode_s=episode_s)


def cmd_eval(a) -> None:
    from dexrl.evaluate import evaluate

    payload = None
    if a.checkpoint:
        if _given(a, "--policy"):
            raise ValueError("--policy and --checkpoint exclude each other: a checkpoint is its own policy")
        from dexrl.config.train import TrainConfig, from_dict
        from dexrl.runtime.checkpoint import load_checkpoint

        payload, _ = load_checkpoint(a.checkpoint)
        cfg = _checkpoint_env(a, from_dict(TrainConfig, payload["config"]).env)
    else:
        _check_named_policy(a.policy, "evaluate")
        cfg = env_config(a, depth=False)
    if a.adr == "max":  # evaluate under the terminal randomization ranges
        from dexrl import adr

        r, w = adr.apply(adr.initial_state("max"), cfg.randomization, cfg.reward)
        cfg = replace(cfg, randomization=r, reward=w)
    result = evaluate(cfg, None if payload else a.policy, a.episodes, payload, a.video)
    _print_table(f"eval: {result['policy']} policy", result)
    if a.json:
        print(json.dumps(result))


def cmd_bench(a) -> None:
    from dexrl.bench.env import bench_env

    result = bench_env(env_config(a), a.steps)
    _print_table("bench env", result)
    if a.json:
        print(json.dumps(result))


def cmd_bench_throughput(a) -> None:
    from dexrl.bench.throughput import bench_throughput, throughput_args
    from dexrl.runtime.launch import check_devices

    parse_resolution(a.resolution)
    procs = a.sim_ranks if a.runtime == "disagg" else a.ranks if a.runtime == "dp" else 1
    # The run's options, checked here: one line now rather than a failed run's two.
    train = build_parser().parse_args(throughput_args(a.runtime, a.num_envs, a.resolution, a.iterations, a.preset, procs,
                                                      a.device, Path("unused"), a.pipeline, a.overlap_update))
    check_devices(_train_config(train)[0])
    result = bench_throughput(a.runtime, a.num_envs, a.resolution, a.iterations, a.preset, procs, a.device, a.pipeline,
                              a.overlap_update)
    _print_table(f"bench throughput: {a.runtime}", result)
    if a.json:
        print(json.dumps(result))


def cmd_bench_capacity(a) -> None:
    from dexrl.bench.capacity import run_capacity
    from dexrl.runtime.launch import check_device

    check_device("--device", a.device)
    a.resolution = a.resolution or ["160x120", "320x240"]
    for r in a.resolution:
        parse_resolution(r)
    table, result = run_capacity(a.resolution, a.gpus, a.gpu_mem_gib, device=a.device, preset=a.preset,
                                 sim_overhead_gib=a.sim_overhead_gib, microbatch_envs=a.microbatch_envs,
                                 encoder_chunk=a.encoder_chunk, image_storage=a.image_storage,
                                 host_mem_gib=a.host_mem_gib, num_envs_probe=a.num_envs_probe,
                                 overlap_update=a.overlap_update or None)
    print(table)
    if a.json:
        print(json.dumps(result))


def cmd_bench_learner(a) -> None:
    from dexrl.bench.learner import bench_learner, format_table, preset_spec
    from dexrl.config.train import apply_overrides, preset
    from dexrl.runtime.launch import check_device, single_process_threads

    check_device("--device", a.device)
    w, h = parse_resolution(a.resolution)
    cfg = apply_overrides(preset(a.preset), [f"env.camera.width={w}", f"env.camera.height={h}"])
    with single_process_threads():  # a learner, on the threads a training run's would have
        result = bench_learner(w, h, a.num_envs, cfg.model, cfg.ppo, device=a.device, iterations=a.iterations,
                               spec=preset_spec(cfg))
    print(format_table(result))
    if a.json:
        print(json.dumps(result))


def cmd_scene(a) -> None:
    from dexrl.sim.scene import build_scene

    xml = build_scene(env_config(a)).to_xml()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w") as f:
        f.write(xml)
    print(f"wrote {a.out} ({len(xml):,} bytes)")


def cmd_report(a) -> None:
    from dexrl.report import report

    markdown, png = report(a.run_dirs, a.out)
    print(markdown)
    print(f"ADR progress plot: {png}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dexrl", allow_abbrev=False, description="End-to-end RL for dexterous grasping on MuJoCo Warp.")
    parser.add_argument("--version", action="version", version=f"dexrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("play", allow_abbrev=False, help="roll a policy out and write a video (third person | depth | stereo RGB)")
    _env_args(p, 16, "160x120")
    p.add_argument("--policy", default="scripted", help="policy to run (default %(default)s)")
    p.add_argument("--video", default="out/play.mp4", help="output .mp4 or .gif (default %(default)s)")
    p.add_argument("--seconds", type=_positive_float, help="length (default: one episode)")
    p.set_defaults(fn=cmd_play)

    p = sub.add_parser("train", allow_abbrev=False, help="train a policy with PPO (single process, data-parallel or disaggregated)",
                       epilog="environment: DEXRL_TORCH_THREADS=n sets the torch threads of every learning process "
                       "(single, the disaggregated learner, each dp rank; sim ranks run one). Default: this "
                       "process's count; dp ranks started here cores // ranks.")
    p.add_argument("--preset", help="quickstart | teacher-depth | teacher-state (default quickstart; "
                   "with --resume, the checkpoint's)")
    p.add_argument("--run-dir", help="where config, metrics, TensorBoard events and checkpoints go (default runs/PRESET-TIME)")
    p.add_argument("--resume", help="a checkpoint file or run directory to continue exactly where it stopped")
    p.add_argument("--max-iterations", type=int,
                   help="iterations in all, counted from the run's start (default: the preset's; quickstart 40)")
    p.add_argument("--num-envs", type=int, help="worlds in all, over every process (default: the preset's)")
    p.add_argument("--resolution", help="depth camera WIDTHxHEIGHT (default: the preset's; quickstart 80x60)")
    p.add_argument("--seed", type=int, help="seeds the network and the worlds' random draws; the object set is the same for every seed "
                        "(env.objects.seed picks another) (default 0)")
    p.add_argument("--device", help="cpu or cuda[:index] (default: the preset's)")
    p.add_argument("--runtime", choices=("single", "dp", "disagg"),
                   help="single process (default), data-parallel ranks, or disaggregated sim ranks + 1 learner")
    p.add_argument("--sim-ranks", type=int, help="disagg: simulator processes (plus one learner)")
    p.add_argument("--ranks", type=int, help="dp: processes, each simulating num_envs / ranks worlds")
    p.add_argument("--backend", choices=("auto", "nccl", "gloo"), help="torch.distributed backend (default auto)")
    p.add_argument("--fault-timeout", type=float, help="seconds before a silent rank stops the run (default 60)")
    p.add_argument("--learner-timeout", type=float,
                   help="disagg: seconds of learner silence after which the sim ranks exit (default 1800)")
    p.add_argument("--adr", choices=("on", "off", "max"),
                   help="automatic domain randomization: on (default), off (fixed configured ranges), max (terminal ranges)")
    p.add_argument("--rdzv-endpoint", help="HOST:PORT for the ranks' rendezvous (default: a free loopback port)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any option, e.g. --set ppo.lr=3e-4 --set env.camera.width=80 (repeatable)")
    p.add_argument("--print-config", action="store_true",
                   help="print the run's resolved config (every option, as JSON) and exit without training")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", allow_abbrev=False, help="success rate and return over finished episodes")
    _env_args(p, 16, "80x60")
    p.add_argument("--policy", default="scripted", help="scripted, or use --checkpoint")
    p.add_argument("--checkpoint", help="a trained checkpoint (file or run directory): deterministic actions")
    p.add_argument("--episodes", type=_positive_int, default=16, help="finished episodes to count (default %(default)s)")
    p.add_argument("--video", help="also write a video (.mp4/.gif) of world 0's first episode")
    p.add_argument("--adr", choices=("off", "max"), default="off",
                   help="off: the environment's configured ranges (default); max: ADR's terminal ranges")
    p.add_argument("--json", action="store_true", help="print one JSON line last")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("bench", allow_abbrev=False, help="benchmarks (each prints a table and one JSON line)")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    b = bsub.add_parser("env", allow_abbrev=False, help="env steps/s, physics steps/s, render frames/s and the engine floor")
    _env_args(b, 64, "80x60")
    b.add_argument("--steps", type=_positive_int, default=20, help="timed env steps (default %(default)s)")
    b.add_argument("--json", action="store_true", help="print one JSON line last")
    b.set_defaults(fn=cmd_bench)
    b = bsub.add_parser("throughput", allow_abbrev=False, help="env-steps/s, per-phase seconds and bytes per step of a short training run")
    b.add_argument("--runtime", choices=("single", "dp", "disagg"), default="single", help="(default %(default)s)")
    b.add_argument("--sim-ranks", type=int, default=2, help="disagg: simulator processes, plus one learner (default %(default)s)")
    b.add_argument("--pipeline", action="store_true", help="disagg: two world groups per sim rank")
    b.add_argument("--overlap-update", action="store_true",
                   help="collect the next rollout during the PPO update (one-iteration policy lag)")
    b.add_argument("--ranks", type=int, default=2, help="dp: processes (default %(default)s)")
    b.add_argument("--num-envs", type=int, default=32, help="worlds in all (default %(default)s)")
    b.add_argument("--resolution", default="80x60", help="depth camera WIDTHxHEIGHT (default %(default)s)")
    b.add_argument("--iterations", type=_at_least_two, default=4,
                   help="training iterations, >= 2; the first is not measured (default %(default)s)")
    b.add_argument("--preset", default="quickstart", help="network, PPO and environment settings (default %(default)s)")
    b.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default %(default)s)")
    b.add_argument("--json", action="store_true", help="print one JSON line last")
    b.set_defaults(fn=cmd_bench_throughput)
    b = bsub.add_parser("capacity", allow_abbrev=False, help="memory of each role and max worlds, data-parallel vs disaggregated (Table I)")
    b.add_argument("--resolution", action="append", help="WxH; repeatable (default 160x120 and 320x240)")
    b.add_argument("--gpus", type=int, default=4, help="GPUs of the node modelled (default %(default)s)")
    b.add_argument("--gpu-mem-gib", type=float, default=48.0, help="memory of each of its GPUs (default %(default)s)")
    b.add_argument("--sim-overhead-gib", type=float, default=1.0, help="per simulating GPU: assets, CUDA context")
    b.add_argument("--host-mem-gib", type=float, default=512.0, help="the node's CPU memory, for --image-storage host")
    b.add_argument("--num-envs-probe", type=_positive_int, default=2,
                   help="p: the fits use (p, 3p, 5p) worlds and minibatches of (p, 2p) envs (default %(default)s)")
    b.add_argument("--microbatch-envs", type=int, help="envs per backward pass (ppo.microbatch_envs; default: the preset's)")
    b.add_argument("--encoder-chunk", type=int,
                   help="images per encoder pass in act, 0 for all at once (model.encoder_chunk; default: the preset's)")
    b.add_argument("--image-storage", choices=IMAGE_STORAGE,
                   help="rollout images for the headline ratio (ppo.image_storage; default: the preset's); both are printed")
    b.add_argument("--overlap-update", action="store_true",
                   help="plan for overlap_update: two rollout storages and a parameter copy per learner")
    b.add_argument("--preset", default="teacher-depth", help="network and PPO settings measured (default %(default)s)")
    b.add_argument("--device", default="cpu", help="where the parts are measured: cpu or cuda[:index] (default %(default)s)")
    b.add_argument("--json", action="store_true", help="print one JSON line last")
    b.set_defaults(fn=cmd_bench_capacity)
    b = bsub.add_parser("learner", allow_abbrev=False, help="PPO update rate and peak learner memory for a preset's network (no simulator)")
    b.add_argument("--resolution", default="160x120", help="depth image WIDTHxHEIGHT (default %(default)s)")
    b.add_argument("--num-envs", type=int, default=64, help="envs in the rollout updated (default %(default)s)")
    b.add_argument("--preset", default="teacher-depth", help="network and PPO settings (default %(default)s)")
    b.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default %(default)s)")
    b.add_argument("--iterations", type=_positive_int, default=2,
                   help="measured updates, after one unmeasured warm-up (default %(default)s)")
    b.add_argument("--json", action="store_true", help="print one JSON line last")
    b.set_defaults(fn=cmd_bench_learner)

    p = sub.add_parser("report", allow_abbrev=False, help="Table II over runs: ADR progress, %% reaching full ADR, success rate; ADR plot")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories (dexrl train --run-dir)")
    p.add_argument("--out", help="folder for adr_progress.png (default: beside the first run)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("scene", allow_abbrev=False, help="write the compiled scene as MJCF that plain MuJoCo loads")
    _env_args(p, 1, "160x120")
    p.add_argument("--out", default="scene.xml", help="MJCF file to write (default %(default)s)")
    p.set_defaults(fn=cmd_scene)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    command = " ".join(filter(None, (args.command, getattr(args, "bench", None))))
    try:
        code = args.fn(args) or 0
    except (ValueError, RuntimeError, OSError) as exc:
        if os.environ.get("DEXRL_DEBUG"):  # the whole traceback, for a report of a defect
            raise
        # Errors a user can cause (a bad option, a path that is a file or a folder where the
        # other was meant) end with one line, not a stack trace; MuJoCo's parser messages
        # span lines ("XML Error: ...\nElement 'x', line 2").
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"dexrl {command}: error: {message}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"\ndexrl {command}: interrupted", file=sys.stderr)
        code = 130
    if code and "RANK" in os.environ:
        sys.exit(code)  # a launched rank reports failure through its exit code
    return code


if __name__ == "__main__":
    sys.exit(main())
