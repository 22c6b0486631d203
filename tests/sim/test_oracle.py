"""Oracle: batched MuJoCo Warp against MuJoCo C on the same compiled model.

Most tests keep the object slot's default (compiled) mesh in both worlds, so each MJW world
is exactly the model MuJoCo C runs; the last gives each world its own object and physics
values, and MuJoCo C a model holding that world's values.
"""

import copy

import mujoco
import numpy as np
import pytest
import torch

from dexrl.config.env import EnvConfig
from dexrl.sim.physics import BatchedPhysics
from dexrl.sim.scene import OBJECT_SPAWN, TABLE_TOP_Z, build_scene, start_qpos

N = 2


@pytest.fixture(scope="module")
def sim():
    scene = build_scene(EnvConfig(num_envs=N, depth=False))
    return scene, BatchedPhysics(scene, N)


def test_worlds_hold_the_compiled_object(sim):
    scene, physics = sim
    ids = physics.fields["geom_dataid"][:, scene.object_geom]
    assert (ids == int(scene.mjm.geom_dataid[scene.object_geom])).all()


def test_forward_kinematics_matches_mujoco_c(sim):
    scene, physics = sim
    m = scene.mjm
    d = mujoco.MjData(m)
    rng = np.random.default_rng(0)
    lo, hi = scene.jnt_range.T
    qpos = np.tile(start_qpos(scene), (N, 1))  # (N, nq)
    qpos[:, scene.qpos_adr] = rng.uniform(lo, hi, size=(N, 23))  # a different pose per world
    physics.qpos.copy_(torch.as_tensor(qpos))
    physics.kinematics()
    for w in range(N):
        d.qpos[:] = qpos[w]
        mujoco.mj_kinematics(m, d)
        # MJW computes in float32: ~1e-7 relative error per op over a 30-body chain of
        # ~1 m lever arms; 1e-5 leaves ample margin (observed ~2e-7).
        np.testing.assert_allclose(physics.xpos[w].numpy(), d.xpos, atol=1e-5)
        np.testing.assert_allclose(physics.xquat[w].numpy(), d.xquat, atol=1e-5)
        np.testing.assert_allclose(physics.site_xpos[w].numpy(), d.site_xpos, atol=1e-5)


def _resting_z(scene, qpos: np.ndarray, m=None) -> float:
    """Object body z at which the lowest hull vertex touches the table top (in ``m``, default
    the compiled scene)."""
    m = scene.mjm if m is None else m
    d = mujoco.MjData(m)
    d.qpos[:] = qpos
    mujoco.mj_kinematics(m, d)
    g = scene.object_geom
    mesh = m.geom_dataid[g]
    verts = m.mesh_vert[m.mesh_vertadr[mesh]:m.mesh_vertadr[mesh] + m.mesh_vertnum[mesh]]  # (V, 3) geom frame
    lowest = (verts @ d.geom_xmat[g].reshape(3, 3).T)[:, 2].min() + d.geom_xpos[g][2]
    return TABLE_TOP_Z + (qpos[scene.object_qpos_adr + 2] - lowest)


def test_contact_step_matches_mujoco_c(sim):
    scene, physics = sim
    m = scene.mjm
    a = scene.object_qpos_adr
    qpos = start_qpos(scene)
    qpos[a:a + 7] = [*OBJECT_SPAWN[:2], 0.0, 1.0, 0.0, 0.0, 0.0]
    qpos[a + 2] = z_rest = _resting_z(scene, qpos)
    rng = np.random.default_rng(1)
    ctrl = np.zeros(m.nu)
    # Targets 0.2 rad off the start pose so the arm and fingers move under their PD control.
    ctrl[scene.actuator_ids] = np.clip(qpos[scene.qpos_adr] + rng.uniform(-0.2, 0.2, 23), *scene.jnt_range.T)
    d = mujoco.MjData(m)
    d.qpos[:], d.ctrl[:] = qpos, ctrl
    physics.qpos.copy_(torch.as_tensor(qpos).expand(N, -1))
    physics.qvel.zero_()
    physics.qacc_warmstart.zero_()
    physics.ctrl.copy_(torch.as_tensor(ctrl).expand(N, -1))
    for _ in range(20):
        mujoco.mj_step(m, d)
        physics.step(1)
    # The object rests on the table in both engines: contacts are active (free fall would
    # drop it 0.5 * 9.81 * (20/120)^2 = 0.136 m), and MJW found the same number of contacts.
    assert d.ncon > 0
    assert int(physics.data.nacon.numpy()[0]) == N * d.ncon
    assert abs(d.qpos[a + 2] - z_rest) < 1e-3
    assert np.abs(d.qpos[scene.qpos_adr] - qpos[scene.qpos_adr]).max() > 0.05  # the robot did move
    # Tolerance 1e-4 (m or rad): MJW steps in float32 (eps 1.2e-7); the PD-driven arm
    # amplifies round-off over 20 steps to ~5e-6 rad, the resting object to ~1e-8 m. A wrong
    # contact (missed, or a different normal/depth) moves the object by mm within 20 steps.
    for w in range(N):
        np.testing.assert_allclose(physics.qpos[w].numpy(), d.qpos, atol=1e-4)
        np.testing.assert_allclose(physics.qvel[w].numpy(), d.qvel, atol=1e-3)  # rad/s, observed 7e-5


def test_graph_replay_steps_exactly_as_launching_each_kernel():
    """A step's substeps run as one recorded Warp graph (a CUDA graph on a GPU). Recording
    runs nothing, so the first call steps once, as every later one, and bit for bit as
    launching each kernel from Python does."""
    scene = build_scene(EnvConfig(num_envs=N, depth=False))
    qpos = torch.as_tensor(start_qpos(scene), dtype=torch.float32).expand(N, -1)
    ctrl = torch.zeros(N, scene.mjm.nu)
    ctrl[:, scene.actuator_ids] = qpos[:, scene.qpos_adr] + 0.2  # the arm and fingers move
    runs = []
    for graph in (True, False):
        physics = BatchedPhysics(scene, N, graph=graph)
        physics.qpos.copy_(qpos)
        physics.ctrl.copy_(ctrl)
        physics.step(2)
        first = physics.qpos.clone()
        for _ in range(3):
            physics.step(2)
        runs.append((first, physics.qpos.clone()))
    assert not torch.equal(runs[1][0], qpos)  # it moved
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


# Fields the randomizer sets from an object's table or from a draw; MuJoCo C derives the rest
# (body_subtreemass, body_invweight0) from them with mj_setConst.
RANDOMIZED_FIELDS = ("geom_dataid", "geom_pos", "geom_quat", "geom_aabb", "geom_rbound", "geom_friction", "body_mass",
                     "body_inertia", "body_ipos", "body_iquat", "actuator_gainprm", "actuator_biasprm",
                     "dof_frictionloss")


def test_randomized_worlds_each_step_as_mujoco_c_with_their_own_model():
    """Two worlds with another object each and their own friction, gains, joint friction and
    mass: each steps as MuJoCo C does with a model holding that world's values, whose derived
    fields MuJoCo C computes itself. A value written to the wrong world, a field the engine
    does not read per world, or a derived field left stale fails it."""
    from dexrl.config.env import RandomizationConfig
    from dexrl.envs.randomization import Randomizer
    from dexrl.sim.rng import WorldRNG

    scene = build_scene(EnvConfig(num_envs=N, depth=False))
    physics = BatchedPhysics(scene, N)
    randomizer = Randomizer(physics)
    everywhere = torch.ones(N, dtype=torch.bool)
    draws = WorldRNG(5, torch.arange(N)).at(0)
    randomizer.assign_objects(everywhere, draws, object_id=torch.tensor([3, 7]))
    randomizer.apply(everywhere, RandomizationConfig(friction=(0.3, 1.5), kp_scale=(0.5, 1.5), kd_scale=(0.5, 1.5),
                                                     joint_friction_scale=(0.0, 0.5), mass_scale=(0.5, 2.0)), draws)
    f = {k: v.numpy() for k, v in physics.fields.items()}
    b, a = scene.object_body, scene.object_qpos_adr
    for name in ("geom_dataid", "body_mass", "geom_friction", "actuator_gainprm", "dof_frictionloss"):
        assert not np.array_equal(f[name][0], f[name][1]), f"{name}: the two worlds were not randomized apart"

    ctrl_offset = np.random.default_rng(2).uniform(-0.2, 0.2, 23)
    worlds_c = []
    for w in range(N):
        m = copy.copy(scene.mjm)
        for name in RANDOMIZED_FIELDS:
            getattr(m, name)[:] = f[name][w].reshape(getattr(m, name).shape)
        d = mujoco.MjData(m)
        mujoco.mj_setConst(m, d)
        np.testing.assert_allclose(f["body_subtreemass"][w, b], m.body_subtreemass[b], rtol=1e-5)
        np.testing.assert_allclose(f["body_invweight0"][w, b], m.body_invweight0[b], rtol=1e-4)

        qpos = start_qpos(scene)
        qpos[a:a + 7] = [*OBJECT_SPAWN[:2], 0.0, 1.0, 0.0, 0.0, 0.0]
        qpos[a + 2] = _resting_z(scene, qpos, m)
        qvel = np.zeros(m.nv)
        qvel[scene.object_dof_adr] = 0.3  # sliding along x: the friction slows it
        ctrl = np.zeros(m.nu)
        ctrl[scene.actuator_ids] = np.clip(qpos[scene.qpos_adr] + ctrl_offset, *scene.jnt_range.T)
        push = np.array([0.0, 0.5, 0.0, 0.0, 0.0, 0.0])  # N along y: the mass sets its acceleration
        d.qpos[:], d.qvel[:], d.ctrl[:], d.xfrc_applied[b] = qpos, qvel, ctrl, push
        physics.qpos[w] = torch.as_tensor(qpos)
        physics.qvel[w] = torch.as_tensor(qvel)
        physics.ctrl[w] = torch.as_tensor(ctrl)
        physics.xfrc_applied[w, b] = torch.as_tensor(push)
        physics.qacc_warmstart[w] = 0.0
        worlds_c.append((m, d))
    for _ in range(20):
        for m, d in worlds_c:
            mujoco.mj_step(m, d)
        physics.step(1)
    moved = [d.qpos[a:a + 2] - OBJECT_SPAWN[:2] for _, d in worlds_c]
    assert not np.allclose(moved[0], moved[1], atol=1e-3)  # friction and mass differ: the objects slid apart
    for w, (m, d) in enumerate(worlds_c):
        np.testing.assert_allclose(physics.qpos[w].numpy(), d.qpos, atol=1e-4, err_msg=f"world {w}")
        np.testing.assert_allclose(physics.qvel[w].numpy(), d.qvel, atol=1e-2, err_msg=f"world {w}")  # the object rolls at ~33 rad/s: 3e-3 observed (float32)
