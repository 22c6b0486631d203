"""GraspEnv: reset -> step smoke test, episode ends, batched resets, per-world DR, object
reassignment and bad input. One 4-world env (16x12 images) is shared by the module; each
test starts with a full reset and restores any config it changes."""

import dataclasses
import math

import mujoco
import mujoco_warp as mjw
import pytest
import torch

from dexrl.config.env import CameraConfig, EnvConfig, RandomizationConfig, parse_resolution
from dexrl.envs.grasp import ActionError, GraspEnv
from dexrl.sim.objects import ObjectSetConfig

N, A, H, W = 4, 23, 12, 16
WIDE = RandomizationConfig(friction=(0.5, 1.2), kp_scale=(0.5, 2.0), kd_scale=(0.5, 2.0), mass_scale=(0.5, 3.0),
                           joint_friction_scale=(0.0, 5.0), spawn_width_m=(0.1, 0.1), spawn_tilt_rad=0.5,
                           reset_joint_pos_noise=0.05, reset_joint_vel_noise=0.1)


@pytest.fixture(scope="module")
def env():
    cfg = EnvConfig(num_envs=N, camera=CameraConfig(width=W, height=H), stereo_rgb=True,
                    objects=ObjectSetConfig(num_objects=12))
    return GraspEnv(cfg)


@pytest.fixture
def fresh(env):
    """The env with its config restored after the test and all worlds reset."""
    saved = dataclasses.replace(env.cfg)
    env.reset()
    yield env
    env.cfg = saved
    env.reset()


def _zeros():
    return torch.zeros(N, A)


def _check_obs(obs: dict, a: int = A):
    shapes = {"proprio": (N, 46 + a), "critic": (N, 112 + a), "state_teacher": (N, 64 + a),
              "depth": (N, 1, H, W), "stereo_rgb": (N, 2, 3, H, W)}
    assert {k: tuple(v.shape) for k, v in obs.items()} == shapes
    assert obs["depth"].dtype == torch.float32 and obs["stereo_rgb"].dtype == torch.uint8
    for name, x in obs.items():
        assert torch.isfinite(x.float()).all(), name


def test_reset_then_step_smoke(fresh):
    env = fresh
    _check_obs(env.reset())
    out = env.step(torch.rand(N, A, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    _check_obs(out.obs)
    assert out.reward.shape == (N,) and torch.isfinite(out.reward).all()
    terms = out.info["reward_terms"]
    assert set(terms) == {"hand_to_object", "object_to_goal", "lift", "finger_curl"}
    for v in terms.values():
        assert v.shape == (N,) and torch.isfinite(v).all()
    torch.testing.assert_close(out.reward, sum(terms.values()))
    # No world ended, so the env's state is the state the terms were computed from.
    assert not (out.terminated | out.truncated).any()
    goal_z = 0.75
    torch.testing.assert_close(terms["lift"], 5.0 * torch.exp(-8.5 * (goal_z - env.object_pos[:, 2]).abs()))
    points = torch.cat([env.palm_pos[:, None], env.tip_pos], 1)  # (N, 5, 3)
    d = (points - env.object_pos[:, None]).norm(dim=-1).amax(1)
    torch.testing.assert_close(terms["hand_to_object"], torch.exp(-10.0 * d))
    # finger_curl <= 0: a penalty, 0 only in the reference posture.
    assert (terms["finger_curl"] <= 0).all()


def test_terminated_and_truncated_are_separate_bool_tensors(fresh):
    """At the time limit a world whose object leaves the workspace on that very step is
    terminated (a terminal state: no bootstrapping), not truncated; the others are truncated."""
    env = fresh
    env.cfg.episode_s = 2 * env.cfg.ctrl_dt  # max_episode_steps = 2
    env.reset()
    out = env.step(_zeros())
    assert not (out.terminated | out.truncated).any()
    a = env.scene.object_qpos_adr
    env.physics.qpos[2, a:a + 3] = torch.tensor([-0.9, 0.1, 0.5])  # world 2: x < -0.8, out of the workspace
    out = env.step(_zeros())  # step 2 of 2
    for flag in (out.terminated, out.truncated):
        assert flag.dtype == torch.bool and flag.shape == (N,)
    assert out.terminated.tolist() == [False, False, True, False]
    assert out.truncated.tolist() == [True, True, False, True]
    assert out.info["done"].all() and (out.info["episode_length"] == 2).all()
    assert (env.episode_step == 0).all()  # every world started over


def test_truncation_after_max_episode_steps(fresh):
    env = fresh
    env.cfg.episode_s = 3 * env.cfg.ctrl_dt  # max_episode_steps = 3
    env.reset()
    for step in range(1, 4):
        out = env.step(_zeros())
        assert not out.terminated.any()
        assert out.truncated.all() == (step == 3) and out.truncated.any() == (step == 3)
    assert (out.info["episode_length"] == 3).all()
    assert (env.episode_step == 0).all()  # auto-reset


@pytest.mark.parametrize("world, pos", [
    (1, (-0.55, 0.9, 0.5)),  # y > 0.5
    (2, (-0.9, 0.1, 0.5)),  # x < -0.8
    (3, (-0.55, 0.1, 0.1)),  # under the table, z < 0.2
])
def test_termination_when_object_leaves_workspace(fresh, world, pos):
    env = fresh
    env.step(_zeros())
    a = env.scene.object_qpos_adr
    env.physics.qpos[world, a:a + 3] = torch.tensor(pos)
    out = env.step(_zeros())
    expected = torch.zeros(N, dtype=torch.bool)
    expected[world] = True
    assert torch.equal(out.terminated, expected)
    assert not out.truncated.any()
    assert env.episode_step.tolist() == [0 if w == world else 2 for w in range(N)]
    # Auto-reset put the object back over the spawn point (spawn width 0 by default).
    torch.testing.assert_close(env.object_pos[world, :2], torch.tensor([-0.55, 0.10]))


def test_reset_subset_leaves_other_worlds_bit_identical(fresh):
    env = fresh
    env.cfg.randomization = WIDE
    env.reset()
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        env.step(torch.rand(N, A, generator=gen) * 2 - 1)
    p = env.physics
    state = {"qpos": p.qpos, "qvel": p.qvel, "ctrl": p.ctrl, "targets": env.targets,
             "episode_step": env.episode_step, "prev_action": env.prev_action, **p.fields,
             "palm_pos_prev": env.palm_pos_prev, "tip_pos_prev": env.tip_pos_prev}  # (their velocities)
    before = {k: v.clone() for k, v in state.items()}
    env.reset(env_ids=[1])
    after = {"qpos": p.qpos, "qvel": p.qvel, "ctrl": p.ctrl, "targets": env.targets,
             "episode_step": env.episode_step, "prev_action": env.prev_action, **p.fields,
             "palm_pos_prev": env.palm_pos_prev, "tip_pos_prev": env.tip_pos_prev}
    for name in before:
        for w in (0, 2, 3):
            assert torch.equal(after[name][w], before[name][w]), (name, w)
    assert not torch.equal(after["qpos"][1], before["qpos"][1])
    assert env.episode_step[1] == 0


def test_a_reset_world_starts_with_no_fingertip_force(fresh):
    """Touch sensors are recomputed by a physics step only: a reset must not hand the new
    episode's first critic observation the last episode's grip."""
    from dexrl.envs.observations import FORCE_SCALE

    env = fresh
    env.physics.sensordata[:, :4] = 5.0  # every hand holding its object, 5 N per fingertip
    obs = env.reset(env_ids=[1])
    force = obs["critic"][:, 107:111]  # after joints 46, palm 10, tips 24, object 13, shape 11, goal 3
    assert torch.equal(force[1], torch.zeros(4))
    torch.testing.assert_close(force[[0, 2, 3]], torch.full((3, 4), 5.0 * FORCE_SCALE))


def test_per_world_randomization_changes_only_targeted_worlds(fresh):
    env = fresh  # reset with the default (no) randomization: every field at its default
    s, f, d = env.scene, env.physics.fields, env.physics.defaults
    act, dof = torch.as_tensor(s.actuator_ids), torch.as_tensor(s.dof_adr)
    og, ob = s.object_geom, s.object_body
    for name in ("geom_friction", "actuator_gainprm", "actuator_biasprm", "dof_frictionloss"):
        assert torch.equal(f[name], d[name]), name
    before = {k: v.clone() for k, v in f.items()}
    env.cfg.randomization = WIDE
    env.reset(env_ids=[0])
    for name in f:  # every per-world field, camera pose included
        assert torch.equal(f[name][1:], before[name][1:]), name  # worlds 1..3 untouched
    # World 0: one friction scale U(0.5, 1.2) on the object and every robot geom.
    fr = f["geom_friction"][0, :, 0] / d["geom_friction"][0, :, 0]  # (ngeom,)
    geoms = torch.cat([torch.as_tensor(s.robot_geoms), torch.tensor([og])])
    assert 0.5 <= fr[og] <= 1.2 and fr[og] != 1.0
    torch.testing.assert_close(fr[geoms], fr[og].expand(len(geoms)))
    # kp scale U(0.5, 2) on gainprm[0] and biasprm[1] alike; kd scale U(0.5, 2) on biasprm[2].
    kp = f["actuator_gainprm"][0, act, 0] / d["actuator_gainprm"][0, act, 0]  # (23,)
    assert 0.5 <= kp[0] <= 2.0 and kp[0] != 1.0
    torch.testing.assert_close(kp, kp[:1].expand(23))
    torch.testing.assert_close(f["actuator_biasprm"][0, act, 1] / d["actuator_biasprm"][0, act, 1], kp)
    kd = f["actuator_biasprm"][0, act, 2] / d["actuator_biasprm"][0, act, 2]
    assert ((0.5 <= kd) & (kd <= 2.0)).all() and kd[0] != 1.0
    # Joint friction U(0, 5) per joint x 1 N m on the arm, x 0.01 N m on the fingers, whose
    # motors (0.5 N m) must still move them (floored at 1e-4 to keep the rows allocated).
    jf = f["dof_frictionloss"][0, dof]  # (23,) N m
    assert ((1e-4 <= jf[:7]) & (jf[:7] <= 5.0)).all() and jf[:7].std() > 0.1
    assert ((1e-4 <= jf[7:]) & (jf[7:] <= 0.05)).all() and jf[7:].std() > 0.001
    # Object mass U(0.5, 3) x the nominal mass of the object world 0 holds; inertia alike.
    k = int(env.randomizer.object_id[0])
    nominal = float(s.props.body_mass[k])
    scale = float(f["body_mass"][0, ob]) / nominal
    assert 0.5 <= scale <= 3.0 and scale != pytest.approx(1.0)
    assert float(f["body_subtreemass"][0, ob]) == pytest.approx(nominal * scale, rel=1e-5)
    torch.testing.assert_close(f["body_inertia"][0, ob].double(),
                               torch.as_tensor(s.props.body_inertia[k]) * scale, rtol=1e-4, atol=0)


def test_object_reassignment(fresh):
    env = fresh
    s, f = env.scene, env.physics.fields
    ids = torch.tensor([3, 5, 7, 9])
    obs = env.reset(object_ids=ids)
    mesh_ids = [mujoco.mj_name2id(s.mjm, mujoco.mjtObj.mjOBJ_MESH, s.props.names[k]) for k in ids]
    assert f["geom_dataid"][:, s.object_geom].tolist() == mesh_ids
    torch.testing.assert_close(f["body_mass"][:, s.object_body].double(), torch.as_tensor(s.props.body_mass[ids]))
    aabb = f["geom_aabb"][:, s.object_geom].reshape(N, 6).double()  # (N, 6) centre, half-extents
    torch.testing.assert_close(aabb, torch.as_tensor(s.props.geom_aabb[ids]))
    assert env.randomizer.object_id.tolist() == ids.tolist()
    # The critic sees the held object's shape descriptor: 46 joint + 10 palm + 24 tip + 13 object -> [93, 104).
    torch.testing.assert_close(obs["critic"][:, 93:104], torch.as_tensor(s.props.descriptor[ids]))
    env.reset(object_ids=[1, 2, 3, 4])  # a list (or ids on another device) lands on the env's device
    assert env.randomizer.object_id.tolist() == [1, 2, 3, 4]


def test_bad_actions_fail_clearly(fresh):
    env = fresh
    steps = env.episode_step.clone()
    with pytest.raises(ActionError, match=r"shape \(4, 23\).*got \(4, 22\)"):
        env.step(torch.zeros(N, A - 1))
    with pytest.raises(ActionError, match="shape"):
        env.step(torch.zeros(N - 1, A))
    bad = _zeros()
    bad[2, 5] = math.nan
    with pytest.raises(ActionError, match="NaN"):
        env.step(bad)
    assert torch.equal(env.episode_step, steps)  # nothing was stepped


def test_unknown_object_folder_fails_clearly():
    with pytest.raises(ValueError, match="/nonexistent/objects.*does not exist"):
        GraspEnv(EnvConfig(num_envs=2, depth=False, objects=ObjectSetConfig(mesh_dir="/nonexistent/objects")))


def test_bad_resolution_fails_clearly():
    assert parse_resolution("160x120") == (160, 120)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT.*160by120"):
        parse_resolution("160by120")
    with pytest.raises(ValueError, match="out of range"):
        parse_resolution("4x3")


def test_nonfinite_world_is_reset_and_counted(fresh):
    env = fresh
    env.step(_zeros())
    count = int(env.nonfinite_resets)
    env.physics.qvel[0] = math.nan
    out = env.step(_zeros())
    _check_obs(out.obs)
    assert out.info["nonfinite"].tolist() == [True, False, False, False]
    assert out.terminated.tolist() == [True, False, False, False] and not out.truncated.any()
    assert int(env.nonfinite_resets) == count + 1
    assert torch.isfinite(out.reward).all() and out.reward[0] == 0
    for v in out.info["reward_terms"].values():
        assert torch.isfinite(v).all()
    assert torch.isfinite(env.physics.qpos).all() and torch.isfinite(env.physics.qvel).all()
    out = env.step(_zeros())  # the reset world runs on
    assert not out.info["nonfinite"].any() and int(env.nonfinite_resets) == count + 1


def test_palm_synergy_action_space_smoke():
    env = GraspEnv(EnvConfig(num_envs=2, depth=False, action_space="palm_synergy",
                             objects=ObjectSetConfig(num_objects=2)))
    assert env.action_dim == 11  # palm xyz + ZYX Euler (6) + 5 synergies
    obs = env.reset()
    assert {k: tuple(v.shape) for k, v in obs.items()} == {"proprio": (2, 57), "critic": (2, 123),
                                                           "state_teacher": (2, 75)}
    out = env.step(torch.zeros(2, 11))
    assert all(torch.isfinite(v).all() for v in out.obs.values()) and torch.isfinite(out.reward).all()
    with pytest.raises(ActionError):
        env.step(torch.zeros(2, 23))


def test_dropped_contacts_are_flagged_per_world_and_step():
    """A contact pool of one per world overflows once the falling object lands: MuJoCo Warp
    drops contacts, and the step says so in every world of the pool."""
    env = GraspEnv(EnvConfig(num_envs=2, depth=False, nconmax_per_world=1, naccdmax_per_world=1,
                             objects=ObjectSetConfig(num_objects=2)))
    env.reset()
    flags = [env.step(torch.zeros(2, A)).info["physics_overflow"] for _ in range(20)]
    assert flags[0].dtype == torch.bool and not flags[0].any()  # still falling: no contacts
    assert any(f.all() for f in flags)
    # The flags are per step: read, then cleared; the solver's iteration cap is not a drop.
    env.physics._overflow.copy_(torch.tensor([int(mjw.OverflowType.CCD), int(mjw.OverflowType.ITERATIONS)]))
    assert env.physics.take_overflow().tolist() == [True, False]
    assert env.physics.take_overflow().tolist() == [False, False]
    with pytest.raises(ValueError, match="naccdmax_per_world"):
        EnvConfig(naccdmax_per_world=49)


def test_episode_success_needs_the_object_held_in_the_region_for_2_s(fresh):
    """At 60 Hz, 2 s is 120 steps: world 0 holds the object at the goal from its first step,
    world 1 leaves the region once, at step 60, and starts counting again."""
    env = fresh
    q, v = env.scene.object_qpos_adr, env.scene.object_dof_adr
    held = []
    for step in range(1, 181):
        pos = env.goal.expand(N, 3).clone()  # (N, 3)
        pos[2:] = torch.tensor([-0.55, 0.10, 0.5])  # worlds 2, 3: never in the region
        if step == 60:
            pos[1, 2] += 0.2  # 0.2 m above the goal: outside the 0.10 m region
        env.physics.qpos[:, q:q + 3] = pos
        env.physics.qvel[:, v:v + 6] = 0.0
        env.physics.kinematics()
        out = env.step(_zeros())
        held.append(out.info["episode_success"].tolist())
    assert held[118][0] is False and held[119][0] is True and held[179][0] is True  # steps 119, 120, 180
    assert held[178][1] is False and held[179][1] is True  # counted again from step 61: 120 steps at step 180
    assert not any(h[2] or h[3] for h in held)


def _world(state: dict, w: int) -> dict:
    """World w's rows of a GraspEnv.state_dict (nested dicts flattened, counters left out)."""
    out = {}
    for group, value in state.items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        out.update({f"{group}/{k}": v[w] for k, v in items if v.ndim > 0})
    return out


def test_a_reset_world_carries_nothing_of_its_last_episode(fresh):
    """World 1 reset after 40 steps of random actions (contacts, warm starts, a disturbance,
    noise, a success count) is bit for bit the world 1 reset straight from the start, and steps
    the same: its draws depend on its episode counter only."""
    env = fresh
    env.cfg.randomization = dataclasses.replace(WIDE, disturbance_accel=20.0, joint_pos_noise=0.02)
    env.reset()
    start = env.state_dict()
    gen = torch.Generator().manual_seed(2)
    actions = [torch.rand(N, A, generator=gen) * 2 - 1 for _ in range(50)]
    for a in actions[:40]:
        env.step(a)
    assert env.episode_count[1] == start["env"]["episode_count"][1]  # no episode of world 1 ended
    env.success_steps[1] = 50  # as if it had held its object for a while (random actions do not)
    runs = []
    for _ in range(2):
        obs = env.reset(env_ids=[1])
        after_reset = _world(env.state_dict(), 1)
        steps = [env.step(a).obs for a in actions[40:]]
        runs.append((after_reset, {k: v[1] for k, v in obs.items()}, [{k: v[1] for k, v in o.items()} for o in steps]))
        env.load_state_dict(start)  # the second run: no history
    (state_a, obs_a, steps_a), (state_b, obs_b, steps_b) = runs
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k
    for a, b in zip([obs_a, *steps_a], [obs_b, *steps_b]):
        for k in a:
            assert torch.equal(a[k], b[k]), k
