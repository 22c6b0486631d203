"""The `dexrl` command: scene export, eval's JSON line, play's video, one-line user errors."""

import json

import imageio.v2 as imageio
import mujoco
import pytest
from PIL import Image

from dexrl.cli import main


def test_scene_writes_mjcf_that_mujoco_loads(tmp_path):
    out = tmp_path / "new" / "scene.xml"  # its folder is made
    assert main(["scene", "--out", str(out), "--num-objects", "6"]) == 0
    m = mujoco.MjModel.from_xml_path(str(out))
    assert m.nu == 23 and m.nmesh == 6  # 23 actuators, one mesh per object
    assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "depth") >= 0


def test_eval_prints_json_last(capsys):
    # 0.05 s episodes = 3 control steps: every world finishes quickly.
    assert main(["eval", "--num-envs", "2", "--episodes", "3", "--episode-s", "0.05", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 3 steps cannot carry an object 0.27 m from its spawn to the goal: no success.
    assert (last["episodes"], last["num_envs"], last["success_rate"], last["reached_rate"]) == (3, 2, 0.0, 0.0)
    assert last["mean_length_s"] == pytest.approx(0.05, abs=1 / 60)


def test_play_writes_gif(tmp_path):
    out = tmp_path / "play.gif"
    assert main(["play", "--num-envs", "2", "--resolution", "16x12", "--seconds", "0.1", "--video", str(out)]) == 0
    frames = imageio.mimread(out)
    assert len(frames) >= 2 and frames[0].shape[0] == 240  # third person | depth | left | right
    # Played at the control rate over every other step: 1 / (2 x 1/60 s) = 30 frames/s, which a
    # GIF stores in centiseconds (30 ms).
    with Image.open(out) as gif:
        assert gif.info["duration"] == 30


def test_a_bad_video_name_fails_before_any_episode(capsys, monkeypatch):
    import dexrl.evaluate

    monkeypatch.setattr(dexrl.evaluate, "GraspEnv", None)  # building the env would be work done in vain
    assert main(["eval", "--num-envs", "2", "--episodes", "2", "--video", "out.avi"]) == 2
    assert "--video must end in .mp4 or .gif, got 'out.avi'" in capsys.readouterr().err


def test_bad_resolution_is_one_line(capsys):
    assert main(["eval", "--resolution", "160by120"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "WIDTHxHEIGHT" in err[0]


def test_non_positive_learner_timeout_is_one_line(capsys, tmp_path):
    assert main(["train", "--runtime", "disagg", "--learner-timeout", "0", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learner_timeout_s must be > 0" in err[0]


def test_missing_mesh_dir_is_one_line(capsys, tmp_path):
    assert main(["scene", "--out", str(tmp_path / "s.xml"), "--mesh-dir", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_train_and_eval_arguments_are_one_line(capsys):
    for argv, says in ((["train", "--preset", "nope"], "unknown preset 'nope'; available: quickstart"),
                       (["train", "--runtime", "disagg", "--sim-ranks", "0"], "sim_ranks must be >= 1"),
                       (["train", "--set", "ppo.lr=abc"], "option ppo.lr must be a number, got 'abc'")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err


@pytest.mark.parametrize("argv, says", [
    (["eval", "--episodes", "0"], "--episodes: must be >= 1, got 0"),
    (["bench", "env", "--steps", "0"], "--steps: must be >= 1, got 0"),
    (["play", "--seconds", "-1"], "--seconds: must be > 0, got -1"),
    (["bench", "learner", "--iterations", "x"], "--iterations: invalid positive integer value: 'x'")])
def test_counts_and_lengths_must_be_positive(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:  # argparse: usage, then one error line
        main(argv)
    assert stop.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["scene", "--out", "{tmp}"], "dexrl scene: error: [Errno 21] Is a directory"),  # an OSError too
    # MuJoCo's parser message spans two lines: joined into one
    (["scene", "--robot-xml", "{tmp}/bad.xml"],
     "dexrl scene: error: robot MJCF '{tmp}/bad.xml' does not parse: XML Error: Schema violation: "
     "unrecognized element; Element 'bad', line 2"),
    (["scene", "--mesh-dir", "{tmp}/bad.xml"], "dexrl scene: error: object mesh folder '{tmp}/bad.xml' is not a folder"),
    (["play", "--policy", "{tmp}"], "dexrl play: error: --policy takes a built-in policy's name (scripted); to film "
     "the checkpoint '{tmp}' use: dexrl eval --checkpoint {tmp} --episodes 1 --video out/play.mp4"),
    (["eval", "--policy", "{tmp}"], "dexrl eval: error: --policy takes a built-in policy's name (scripted); "
     "to evaluate the checkpoint '{tmp}' use: dexrl eval --checkpoint {tmp}"),
    (["train", "--sim-ranks", "3", "--run-dir", "{tmp}/r"], "dexrl train: error: --sim-ranks needs --runtime disagg"),
    (["bench", "learner", "--device", "gpu"], "dexrl bench learner: error: --device 'gpu': unknown device"),
    (["bench", "capacity", "--device", "gpu"], "dexrl bench capacity: error: --device 'gpu': unknown device"),
    # the benchmark's training run is checked before it starts: one line, not the run's two
    (["bench", "throughput", "--runtime", "disagg", "--sim-ranks", "3", "--num-envs", "4"],
     "dexrl bench throughput: error: env.num_envs (4) must split evenly over 3 sim ranks"),
    # a pipeline is the disaggregated runtime's: the result must not be labelled with one it did not run
    (["bench", "throughput", "--runtime", "single", "--pipeline"],
     "dexrl bench throughput: error: pipeline needs --runtime disagg"),
    # each rank's worlds, not the total, are cut into minibatches: refused before any rank starts
    (["train", "--runtime", "dp", "--ranks", "2", "--num-envs", "6", "--run-dir", "{tmp}/r"],
     "dexrl train: error: each data-parallel rank trains on its own 3 worlds (env.num_envs 6 / 2 ranks)"),
    (["train", "--runtime", "dp", "--ranks", "2", "--num-envs", "4", "--backend", "nccl", "--device", "cpu",
      "--run-dir", "{tmp}/r"], "dexrl train: error: --backend nccl needs a CUDA device of its own for each of the 2"),
    (["eval", "--episode-s", "inf"], "dexrl eval: error: episode_s must be a finite number of seconds"),
    # the multi-process runtimes' options, where they would be ignored
    (["train", "--backend", "gloo", "--run-dir", "{tmp}/r"], "dexrl train: error: --backend needs --runtime dp or disagg"),
    (["train", "--runtime", "dp", "--learner-timeout", "5", "--run-dir", "{tmp}/r"],
     "dexrl train: error: --learner-timeout needs --runtime disagg (this run's runtime: dp)"),
    (["train", "--set", "env.objects.mesh_scale=-1", "--run-dir", "{tmp}/r"],
     "dexrl train: error: objects.mesh_scale must be > 0"),
    (["train", "--set", "env.camera.hfov_deg=500", "--run-dir", "{tmp}/r"],
     "dexrl train: error: camera.hfov_deg must be in (0, 180)"),
    (["train", "--set", "env.joint_delta_scale=-1", "--run-dir", "{tmp}/r"],
     "dexrl train: error: joint_delta_scale must be > 0"),
    (["train", "--set", "env.randomization.friction=[1]", "--run-dir", "{tmp}/r"],
     "dexrl train: error: randomization.friction must be a range (lo, hi), got (1.0,)"),
    # options that a mesh folder makes meaningless are refused, not ignored
    (["scene", "--mesh-dir", "{tmp}", "--objects", "eval"], "dexrl scene: error: objects.split 'eval' is the procedural"),
    (["scene", "--mesh-dir", "{tmp}", "--num-objects", "5"], "dexrl scene: error: --num-objects sizes the procedural set"),
])
def test_more_user_errors_are_one_line(argv, says, capsys, tmp_path, monkeypatch):
    import dexrl.bench.throughput

    monkeypatch.setattr(dexrl.bench.throughput, "bench_throughput", None)  # never reached
    (tmp_path / "bad.xml").write_text("<mujoco><worldbody>\n<bad/></worldbody></mujoco>")
    assert main([x.format(tmp=tmp_path) for x in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(says.format(tmp=tmp_path)), err


def test_a_folder_named_like_a_policy_is_not_taken_for_a_checkpoint(tmp_path, monkeypatch):
    from dexrl.cli.commands import _check_named_policy

    monkeypatch.chdir(tmp_path)
    (tmp_path / "scripted").mkdir()
    _check_named_policy("scripted", "film")  # no error: the built-in name wins


def test_version(capsys):
    from dexrl import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"dexrl {__version__}\n"


def test_no_option_is_taken_by_its_abbreviation(capsys):
    with pytest.raises(SystemExit):  # `--res` once silently meant --resume
        main(["train", "--res", "32x24"])
    assert "unrecognized arguments: --res" in capsys.readouterr().err


def test_resuming_a_run_that_has_reached_max_iterations_says_so(capsys, tmp_path):
    from dexrl.config.train import preset, to_dict
    from dexrl.runtime.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "checkpoints" / "iter_000003.pt", {"iteration": 3, "config": to_dict(preset("quickstart"))})
    assert main(["train", "--resume", str(tmp_path), "--max-iterations", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is at iteration 3, and --max-iterations counts from the run's start (3)" in err[0]


@pytest.mark.parametrize("change, says", [
    (["--set", "model.activation=relu"], "model.activation elu -> relu"),  # would load, and compute otherwise
    (["--resolution", "32x24"], "env.camera.width 80 -> 32, env.camera.height 60 -> 24"),
    (["--set", "env.action_space=joint_delta"], "env.action_space palm_synergy -> joint_delta"),
])
def test_a_resume_that_would_change_the_network_is_one_line(change, says, capsys, tmp_path):
    from dexrl.config.train import preset, to_dict
    from dexrl.runtime.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "checkpoints" / "iter_000003.pt", {"iteration": 3, "config": to_dict(preset("quickstart"))})
    assert main(["train", "--resume", str(tmp_path), "--max-iterations", "5", *change]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"a resumed run keeps the network its checkpoint was trained with, and {says} would" in err[0]


def test_a_resume_may_change_what_leaves_the_network_alone():
    from dexrl.cli.train import _check_same_network
    from dexrl.config.train import apply_overrides, network_settings, preset

    cfg = preset("quickstart")
    changed = apply_overrides(cfg, ["model.encoder_chunk=7", "ppo.lr=3e-4", "env.num_envs=64", "env.seed=3"])
    _check_same_network(network_settings(cfg), network_settings(changed))  # no error


def test_print_config_prints_the_resolved_config_and_trains_nothing(capsys, tmp_path, monkeypatch):
    from dexrl.config.train import loads
    import dexrl.runtime.single

    monkeypatch.setattr(dexrl.runtime.single, "Trainer", None)  # never reached
    assert main(["train", "--preset", "teacher-depth", "--set", "ppo.lr=3e-4", "--num-envs", "64",
                 "--run-dir", str(tmp_path / "r"), "--print-config"]) == 0
    cfg = loads(capsys.readouterr().out)
    assert (cfg.preset, cfg.ppo.lr, cfg.env.num_envs) == ("teacher-depth", 3e-4, 64)
    assert not (tmp_path / "r").exists()


def test_train_takes_a_resolution():
    from dexrl.cli import build_parser
    from dexrl.cli.train import train_config

    cfg, _, _ = train_config(build_parser().parse_args(["train", "--resolution", "32x24"]))
    assert (cfg.env.camera.width, cfg.env.camera.height) == (32, 24)


def test_seed_draws_another_episode_but_keeps_the_object_set():
    from dexrl.cli import build_parser
    from dexrl.cli.commands import env_config

    for argv in (["eval", "--seed", "5"], ["scene", "--seed", "5"]):
        a = build_parser().parse_args(argv)
        a.argv = argv
        cfg = env_config(a)
        assert cfg.seed == 5 and cfg.objects.seed == 0


def test_dexrl_debug_shows_the_whole_traceback(monkeypatch, capsys):
    argv = ["eval", "--episode-s", "inf"]
    assert main(argv) == 2  # one line
    monkeypatch.setenv("DEXRL_DEBUG", "1")
    with pytest.raises(ValueError, match="episode_s must be a finite number"):
        main(argv)


def test_a_new_run_records_its_mesh_folder_and_robot_as_absolute_paths(tmp_path, monkeypatch, capsys):
    # config.json must name the same files when the run is resumed or evaluated from elsewhere.
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--print-config", "--set", "env.objects.mesh_dir=meshes", "--set", "env.robot_xml=r.xml"]) == 0
    env = json.loads(capsys.readouterr().out)["env"]
    assert env["objects"]["mesh_dir"] == str(tmp_path / "meshes") and env["robot_xml"] == str(tmp_path / "r.xml")
