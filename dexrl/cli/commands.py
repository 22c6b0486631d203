"""The commands other than train: play, eval, bench, report and scene."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from dexrl.cli.train import train_config
from dexrl.config.env import CameraConfig, EnvConfig, parse_resolution
from dexrl.sim.objects import ObjectSetConfig


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


def cmd_bench_env(a) -> None:
    from dexrl.bench.env import bench_env

    result = bench_env(env_config(a), a.steps)
    _print_table("bench env", result)
    if a.json:
        print(json.dumps(result))


def cmd_bench_throughput(a) -> None:
    from dexrl.bench.throughput import bench_throughput, throughput_args
    from dexrl.cli.parser import build_parser
    from dexrl.runtime.launch import check_devices

    parse_resolution(a.resolution)
    procs = a.sim_ranks if a.runtime == "disagg" else a.ranks if a.runtime == "dp" else 1
    # The run's options, checked here: one line now rather than a failed run's two.
    train = build_parser().parse_args(throughput_args(a.runtime, a.num_envs, a.resolution, a.iterations, a.preset, procs,
                                                      a.device, Path("unused"), a.pipeline, a.overlap_update))
    check_devices(train_config(train)[0])
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
