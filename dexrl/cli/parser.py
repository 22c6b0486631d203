"""The command line: one sub-parser a command, each running a function of commands.py or train.py."""

from __future__ import annotations

import argparse

from dexrl import __version__
from dexrl.cli.commands import (cmd_bench_capacity, cmd_bench_env, cmd_bench_learner, cmd_bench_throughput, cmd_eval,
                                cmd_play, cmd_report, cmd_scene)
from dexrl.cli.train import cmd_train
from dexrl.config.rl import IMAGE_STORAGE


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


def env_args(p: argparse.ArgumentParser, num_envs: int, resolution: str, simulates: bool = True) -> None:
    """The environment's options; ``simulates``: the command steps worlds on a device."""
    g = p.add_argument_group("environment")
    g.add_argument("--num-envs", type=int, default=num_envs, help="worlds simulated in parallel (default %(default)s)")
    g.add_argument("--resolution", default=resolution, help="camera WIDTHxHEIGHT: 80x60 (CPU), 160x120, 320x240 (default %(default)s)")
    if simulates:
        g.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default %(default)s)")
    else:
        p.set_defaults(device="cpu")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dexrl", allow_abbrev=False, description="End-to-end RL for dexterous grasping on MuJoCo Warp.")
    parser.add_argument("--version", action="version", version=f"dexrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_play, _add_train, _add_eval, _add_bench, _add_report, _add_scene):
        add(sub)
    return parser


def _add_play(sub) -> None:
    p = sub.add_parser("play", allow_abbrev=False, help="roll a policy out and write a video (third person | depth | stereo RGB)")
    env_args(p, 16, "160x120")
    p.add_argument("--policy", default="scripted", help="policy to run (default %(default)s)")
    p.add_argument("--video", default="out/play.mp4", help="output .mp4 or .gif (default %(default)s)")
    p.add_argument("--seconds", type=_positive_float, help="length (default: one episode)")
    p.set_defaults(fn=cmd_play)


def _add_train(sub) -> None:
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


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", allow_abbrev=False, help="success rate and return over finished episodes")
    env_args(p, 16, "80x60")
    p.add_argument("--policy", default="scripted", help="scripted, or use --checkpoint")
    p.add_argument("--checkpoint", help="a trained checkpoint (file or run directory): deterministic actions")
    p.add_argument("--episodes", type=_positive_int, default=16, help="finished episodes to count (default %(default)s)")
    p.add_argument("--video", help="also write a video (.mp4/.gif) of world 0's first episode")
    p.add_argument("--adr", choices=("off", "max"), default="off",
                   help="off: the environment's configured ranges (default); max: ADR's terminal ranges")
    p.add_argument("--json", action="store_true", help="print one JSON line last")
    p.set_defaults(fn=cmd_eval)


def _add_bench(sub) -> None:
    """dexrl bench: one sub-parser a benchmark"""
    p = sub.add_parser("bench", allow_abbrev=False, help="benchmarks (each prints a table and one JSON line)")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for add in (_add_bench_env, _add_bench_throughput, _add_bench_capacity, _add_bench_learner):
        add(bsub)


def _add_bench_env(bsub) -> None:
    b = bsub.add_parser("env", allow_abbrev=False, help="env steps/s, physics steps/s, render frames/s and the engine floor")
    env_args(b, 64, "80x60")
    b.add_argument("--steps", type=_positive_int, default=20, help="timed env steps (default %(default)s)")
    b.add_argument("--json", action="store_true", help="print one JSON line last")
    b.set_defaults(fn=cmd_bench_env)


def _add_bench_throughput(bsub) -> None:
    b = bsub.add_parser("throughput", allow_abbrev=False, help="env-steps/s, per-phase seconds and bytes per step of a short training run")
    b.add_argument("--runtime", choices=("single", "dp", "disagg"), default="single", help="(default %(default)s)")
    b.add_argument("--sim-ranks", type=int, default=2, help="disagg: simulator processes, plus one learner (default %(default)s)")
    b.add_argument("--pipeline", action="store_true", help="disagg: two world groups, each stepped while the learner serves the other")
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


def _add_bench_capacity(bsub) -> None:
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


def _add_bench_learner(bsub) -> None:
    b = bsub.add_parser("learner", allow_abbrev=False, help="PPO update rate and peak learner memory for a preset's network (no simulator)")
    b.add_argument("--resolution", default="160x120", help="depth image WIDTHxHEIGHT (default %(default)s)")
    b.add_argument("--num-envs", type=int, default=64, help="envs in the rollout updated (default %(default)s)")
    b.add_argument("--preset", default="teacher-depth", help="network and PPO settings (default %(default)s)")
    b.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default %(default)s)")
    b.add_argument("--iterations", type=_positive_int, default=2,
                   help="measured updates, after one unmeasured warm-up (default %(default)s)")
    b.add_argument("--json", action="store_true", help="print one JSON line last")
    b.set_defaults(fn=cmd_bench_learner)


def _add_report(sub) -> None:
    p = sub.add_parser("report", allow_abbrev=False, help="Table II over runs: ADR progress, %% reaching full ADR, success rate; ADR plot")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories (dexrl train --run-dir)")
    p.add_argument("--out", help="folder for adr_progress.png (default: beside the first run)")
    p.set_defaults(fn=cmd_report)


def _add_scene(sub) -> None:
    p = sub.add_parser("scene", allow_abbrev=False, help="write the compiled scene as MJCF that plain MuJoCo loads")
    env_args(p, 1, "160x120", simulates=False)
    p.add_argument("--out", default="scene.xml", help="MJCF file to write (default %(default)s)")
    p.set_defaults(fn=cmd_scene)
