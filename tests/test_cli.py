"""The `dexrl` command: scene export, eval's JSON line, play's video, one-line user errors."""

import json

import imageio.v2 as imageio
import mujoco
import pytest
from PIL import Image

from dexrl.cli import main


def test_scene_writes_mjcf_that_mujoco_loads(tmp_path):
    out = tmp_path / "scene.xml"
    assert main(["scene", "--out", str(out), "--num-objects", "6"]) == 0
    m = mujoco.MjModel.from_xml_path(str(out))
    assert m.nu == 23 and m.nmesh == 6  # 23 actuators, one mesh per object
    assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "depth") >= 0


def test_eval_prints_json_last(capsys):
    # 0.05 s episodes = 3 control steps: every world finishes quickly.
    assert main(["eval", "--num-envs", "2", "--episodes", "3", "--episode-s", "0.05", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 3 steps cannot carry an object 0.27 m from its spawn to the goal: no success.
    assert (last["episodes"], last["num_envs"], last["success_rate"]) == (3, 2, 0.0)
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
