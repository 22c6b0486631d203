"""The `dexrl` command: one way in to every job."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from dexrl.config.env import CameraConfig, EnvConfig, parse_resolution
from dexrl.config.rl import IMAGE_STORAGE
from dexrl.sim.objects import ObjectSetConfig


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# argparse names the type in its message: "invalid positive integer value: 'x'".
_positive_int.__name__, _positive_float.__name__ = "positive integer", "positive number"


def _env_args(p: argparse.ArgumentParser, num_envs: int, resolution: str) -> None:
    g = p.add_argument_group("environment")
    g.add_argument("--num-envs", type=int, default=num_envs, help="worlds simulated in parallel (default %(default)s)")
    g.add_argument("--resolution", default=resolution, help="camera WIDTHxHEIGHT: 80x60 (CPU), 160x120, 320x240 (default %(default)s)")
    g.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default %(default)s)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--action-space", choices=("joint_delta", "palm_synergy"), default="joint_delta")
    g.add_argument("--objects", choices=("train", "eval"), default="train", help="procedural object split")
    g.add_argument("--num-objects", type=int, default=64)
    g.add_argument("--mesh-dir", help="a folder of .obj/.stl objects to use instead of the procedural set")
    g.add_argument("--mesh-scale", type=_positive_float, default=1.0,
                   help="metres per mesh-file unit (0.001 for millimetres; default %(default)s)")
    g.add_argument("--robot-xml", help="a robot MJCF following dexrl's naming contract (README)")
    g.add_argument("--episode-s", type=float, default=10.0)


def env_config(a: argparse.Namespace, **overrides) -> EnvConfig:
    w, h = parse_resolution(a.resolution)
    cfg = EnvConfig(
        num_envs=a.num_envs, device=a.device, seed=a.seed, action_space=a.action_space, episode_s=a.episode_s,
        camera=CameraConfig(width=w, height=h), robot_xml=a.robot_xml,
        objects=ObjectSetConfig(num_objects=a.num_objects, seed=a.seed, split=a.objects, mesh_dir=a.mesh_dir,
                               mesh_scale=a.mesh_scale),
    )
    return replace(cfg, **overrides)


def _print_table(title: str, row: dict) -> None:
    width = max(len(k) for k in row)
    print(title)
    for k, v in row.items():
        print(f"  {k:<{width}}  {v:,.3f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


def cmd_play(a) -> None:
    from dexrl.play import play

    cfg = env_config(a, stereo_rgb=True)
    out = play(cfg, a.policy, a.video, a.seconds)
    print(f"wrote {out}")


def _train_config(a):
    """The resolved config and the checkpoint payload to resume from (or None)."""
    from dexrl.config.train import TrainConfig, apply_overrides, from_dict, preset
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
    flags = (("num_envs", "env.num_envs"), ("max_iterations", "max_iterations"), ("device", "env.device"),
             ("runtime", "runtime"), ("sim_ranks", "sim_ranks"), ("ranks", "ranks"), ("backend", "backend"),
             ("fault_timeout", "fault_timeout_s"), ("learner_timeout", "learner_timeout_s"), ("adr", "adr"))
    for flag, key in flags:
        if getattr(a, flag) is not None:
            overrides.append(f"{key}={getattr(a, flag)}")
    if a.seed is not None:
        overrides += [f"seed={a.seed}", f"env.seed={a.seed}"]
    return apply_overrides(cfg, overrides), payload, path


def _run_dir(a, cfg, checkpoint_path) -> Path:
    import os

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
    from dexrl.runtime.checkpoint import resumable
    from dexrl.runtime.single import Trainer

    trainer = Trainer.build(cfg)
    if payload is not None:
        payload, warning = resumable(payload, cfg)
        if warning:
            print(f"dexrl train: warning: {warning}", file=sys.stderr)
        trainer.load_state_dict(payload)
        print(f"resuming {run_dir} at iteration {trainer.iteration}")
    trainer.train(run_dir)
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
    from dexrl.bench.throughput import bench_throughput

    parse_resolution(a.resolution)
    procs = a.sim_ranks if a.runtime == "disagg" else a.ranks if a.runtime == "dp" else 1
    result = bench_throughput(a.runtime, a.num_envs, a.resolution, a.iterations, a.preset, procs, a.device, a.pipeline,
                              a.overlap_update)
    _print_table(f"bench throughput: {a.runtime}", result)
    if a.json:
        print(json.dumps(result))


def cmd_bench_capacity(a) -> None:
    from dexrl.bench.capacity import run_capacity

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

    w, h = parse_resolution(a.resolution)
    cfg = apply_overrides(preset(a.preset), [f"env.camera.width={w}", f"env.camera.height={h}"])
    result = bench_learner(w, h, a.num_envs, cfg.model, cfg.ppo, device=a.device, iterations=a.iterations,
                           spec=preset_spec(cfg))
    print(format_table(result))
    if a.json:
        print(json.dumps(result))


def cmd_scene(a) -> None:
    from dexrl.sim.scene import build_scene

    xml = build_scene(env_config(a)).to_xml()
    with open(a.out, "w") as f:
        f.write(xml)
    print(f"wrote {a.out} ({len(xml):,} bytes)")


def cmd_report(a) -> None:
    from dexrl.report import report

    markdown, png = report(a.run_dirs, a.out)
    print(markdown)
    print(f"ADR progress plot: {png}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dexrl", description="End-to-end RL for dexterous grasping on MuJoCo Warp.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("play", help="roll a policy out and write a video (third person | depth | stereo RGB)")
    _env_args(p, 16, "160x120")
    p.add_argument("--policy", default="scripted", help="policy to run (default %(default)s)")
    p.add_argument("--video", default="out/play.mp4", help="output .mp4 or .gif (default %(default)s)")
    p.add_argument("--seconds", type=_positive_float, help="length (default: one episode)")
    p.set_defaults(fn=cmd_play)

    p = sub.add_parser("train", help="train a policy with PPO (single process, data-parallel or disaggregated)")
    p.add_argument("--preset", help="quickstart | teacher-depth | teacher-state (default quickstart; "
                   "with --resume, the checkpoint's)")
    p.add_argument("--run-dir", help="where config, metrics, TensorBoard events and checkpoints go (default runs/PRESET-TIME)")
    p.add_argument("--resume", help="a checkpoint file or run directory to continue exactly where it stopped")
    p.add_argument("--max-iterations", type=int)
    p.add_argument("--num-envs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu or cuda[:index]")
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
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="success rate and return over finished episodes", allow_abbrev=False)
    _env_args(p, 16, "80x60")
    p.add_argument("--policy", default="scripted", help="scripted, or use --checkpoint")
    p.add_argument("--checkpoint", help="a trained checkpoint (file or run directory): deterministic actions")
    p.add_argument("--episodes", type=_positive_int, default=16)
    p.add_argument("--video", help="also write a video (.mp4/.gif) of world 0's first episode")
    p.add_argument("--adr", choices=("off", "max"), default="off",
                   help="off: the environment's configured ranges (default); max: ADR's terminal ranges")
    p.add_argument("--json", action="store_true", help="print one JSON line last")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("bench", help="benchmarks (each prints a table and one JSON line)")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    b = bsub.add_parser("env", help="env steps/s, physics steps/s, render frames/s and the engine floor")
    _env_args(b, 64, "80x60")
    b.add_argument("--steps", type=_positive_int, default=20)
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=cmd_bench)
    b = bsub.add_parser("throughput", help="env-steps/s, per-phase seconds and bytes per step of a short training run")
    b.add_argument("--runtime", choices=("single", "dp", "disagg"), default="single")
    b.add_argument("--sim-ranks", type=int, default=2)
    b.add_argument("--pipeline", action="store_true", help="disagg: two world groups per sim rank")
    b.add_argument("--overlap-update", action="store_true",
                   help="collect the next rollout during the PPO update (one-iteration policy lag)")
    b.add_argument("--ranks", type=int, default=2)
    b.add_argument("--num-envs", type=int, default=32)
    b.add_argument("--resolution", default="80x60")
    b.add_argument("--iterations", type=_positive_int, default=4, help="training iterations; the first is not measured")
    b.add_argument("--preset", default="quickstart")
    b.add_argument("--device", default="cpu")
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=cmd_bench_throughput)
    b = bsub.add_parser("capacity", help="memory of each role and max worlds, data-parallel vs disaggregated (Table I)")
    b.add_argument("--resolution", action="append", help="WxH; repeatable (default 160x120 and 320x240)")
    b.add_argument("--gpus", type=int, default=4)
    b.add_argument("--gpu-mem-gib", type=float, default=48.0)
    b.add_argument("--sim-overhead-gib", type=float, default=1.0, help="per simulating GPU: assets, CUDA context")
    b.add_argument("--host-mem-gib", type=float, default=512.0, help="the node's CPU memory, for --image-storage host")
    b.add_argument("--num-envs-probe", type=_positive_int, default=2,
                   help="p: the fits use (p, 3p, 5p) worlds and minibatches of (p, 2p) envs (default %(default)s)")
    b.add_argument("--microbatch-envs", type=int, help="envs per backward pass (ppo.microbatch_envs; default: the preset's)")
    b.add_argument("--encoder-chunk", type=int, help="images per encoder pass in act (model.encoder_chunk; default: the preset's)")
    b.add_argument("--image-storage", choices=IMAGE_STORAGE,
                   help="rollout images for the headline ratio (ppo.image_storage; default: the preset's); both are printed")
    b.add_argument("--overlap-update", action="store_true",
                   help="plan for overlap_update: two rollout storages and a parameter copy per learner")
    b.add_argument("--preset", default="teacher-depth")
    b.add_argument("--device", default="cpu")
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=cmd_bench_capacity)
    b = bsub.add_parser("learner", help="PPO update rate and peak learner memory for a preset's network (no simulator)")
    b.add_argument("--resolution", default="160x120")
    b.add_argument("--num-envs", type=int, default=64)
    b.add_argument("--preset", default="teacher-depth", help="network and PPO settings (default %(default)s)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--iterations", type=_positive_int, default=2)
    b.add_argument("--json", action="store_true")
    b.set_defaults(fn=cmd_bench_learner)

    p = sub.add_parser("report", help="Table II over runs: ADR progress, %% reaching full ADR, success rate; ADR plot")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="folder for adr_progress.png (default: beside the first run)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("scene", help="write the compiled scene as MJCF that plain MuJoCo loads")
    _env_args(p, 1, "160x120")
    p.add_argument("--out", default="scene.xml")
    p.set_defaults(fn=cmd_scene)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        code = args.fn(args) or 0
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        # Errors a user can cause end with one line, not a stack trace.
        print(f"dexrl {args.command}: error: {exc}", file=sys.stderr)
        code = 2
    if code and "RANK" in __import__("os").environ:
        sys.exit(code)  # a launched rank reports failure through its exit code
    return code


if __name__ == "__main__":
    sys.exit(main())
