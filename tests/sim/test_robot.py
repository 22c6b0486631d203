"""The robot built by code: joints, actuators, limits, masses and kinematics as the issue
specifies them (numbers typed from the issue, not imported), and the user-MJCF contract."""

import math

import mujoco
import numpy as np
import pytest

from dexrl.config.env import EnvConfig
from dexrl.sim.robot import ROBOT_JOINTS, START_QPOS, build_robot_xml, quat_from_rpy
from dexrl.sim.scene import RobotModelError, build_scene

ARM = [f"iiwa_joint_{i}" for i in range(1, 8)]
HAND = [f"{f}_joint_{j}" for f in ("index", "middle", "ring", "thumb") for j in range(4)]
KP = [300, 300, 300, 300, 100, 50, 25] + [3.0] * 16
KD = [45, 45, 45, 45, 20, 15, 15] + [0.1] * 16
EFFORT = [300.0] * 7 + [0.5] * 16
ARM_LIM = [2.967, 2.094, 2.967, 2.094, 2.967, 2.094, 3.054]
FINGER_LIM = [(-0.5585, 0.5585), (-0.2792, 1.7278), (-0.2792, 1.7278), (-0.2792, 1.7278)]
ARM_MASS = [3.45, 3.48, 4.06, 3.48, 2.16, 2.35, 3.13]
C45 = math.cos(math.pi / 4)  # = sin 45 deg = 0.70711


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(build_robot_xml())


def _body(m, name):
    return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)


def test_joints_are_23_hinges_in_contract_order(model):
    assert list(ROBOT_JOINTS) == ARM + HAND
    assert [model.joint(i).name for i in range(model.njnt)] == ARM + HAND
    assert (model.jnt_type == mujoco.mjtJoint.mjJNT_HINGE).all()
    assert model.nq == model.nv == 23


def test_actuators_pd_gains_and_effort(model):
    assert model.nu == 23
    assert [model.actuator(i).name for i in range(model.nu)] == ARM + HAND
    np.testing.assert_array_equal(model.actuator_trnid[:, 0], np.arange(23))  # actuator i drives joint i
    # MuJoCo position actuator: force = kp * ctrl - kp * q - kd * qdot
    #   -> gainprm[0] = kp, biasprm[1] = -kp, biasprm[2] = -kd.
    np.testing.assert_allclose(model.actuator_gainprm[:, 0], KP)
    np.testing.assert_allclose(model.actuator_biasprm[:, 1], -np.array(KP))
    np.testing.assert_allclose(model.actuator_biasprm[:, 2], -np.array(KD))
    assert model.actuator_forcelimited.all()
    np.testing.assert_allclose(model.actuator_forcerange, np.stack([-np.array(EFFORT), EFFORT], 1))


def test_joint_limits(model):
    expected = [(-lim, lim) for lim in ARM_LIM] + FINGER_LIM * 3
    expected += [(0.2792, 1.5708), (-0.3316, 1.1519)]  # thumb j0, j1 (j2, j3 unspecified)
    assert model.jnt_limited.all()
    np.testing.assert_allclose(model.jnt_range[:21], expected, atol=1e-9)
    # The start pose lies inside the limits (else the env silently clips it).
    start = [-0.85, 0.0, 0.76, 1.25, -1.76, 0.90, 0.64] + [0.0, 0.3, 0.3, 0.3] * 3 + [1.5, 0.0, 1.0, 0.5]
    np.testing.assert_allclose(START_QPOS, start)
    assert ((model.jnt_range[:, 0] <= START_QPOS) & (START_QPOS <= model.jnt_range[:, 1])).all()


def test_link_masses(model):
    masses = [model.body_mass[_body(model, f"iiwa_link_{i}")] for i in range(1, 8)]
    np.testing.assert_allclose(masses, ARM_MASS)
    assert model.body_mass[_body(model, "palm")] == pytest.approx(0.4154)


def test_zero_pose_forward_kinematics(model):
    d = mujoco.MjData(model)
    mujoco.mj_kinematics(model, d)
    # All joints 0: the iiwa stands straight up. link7 origin z = 0.1575 + 0.1825 (j2)
    # + 0.184 + 0.216 (j4) + 0.184 + 0.216 (j6) + 0.081 (j7) = 1.221 m, frame aligned with
    # the world (the half turns of the rpy origins cancel).
    link7 = _body(model, "iiwa_link_7")
    np.testing.assert_allclose(d.xpos[link7], [0.0, 0.0, 1.221], atol=1e-9)
    np.testing.assert_allclose(np.abs(d.xquat[link7]), [1.0, 0.0, 0.0, 0.0], atol=1e-9)
    # Palm mounted at link7 + (-0.0082, -0.0206, 0.1519): z = 1.221 + 0.1519 = 1.3729.
    palm = _body(model, "palm")
    np.testing.assert_allclose(d.xpos[palm], [-0.0082, -0.0206, 1.3729], atol=1e-9)
    q = np.array([0.6533, 0.2706, -0.6533, 0.2706])
    np.testing.assert_allclose(model.body_quat[palm], q / np.linalg.norm(q), atol=1e-9)
    roots = {"index": (0.0514, -0.0363, -0.0113), "middle": (0.0537, 0.0088, -0.0113),
             "ring": (0.0514, 0.0539, -0.0113), "thumb": (0.0070, -0.0105, -0.0295)}
    for finger, pos in roots.items():
        np.testing.assert_allclose(model.body_pos[_body(model, f"{finger}_link_0")], pos, atol=1e-9)
    # Segment lengths: finger j0->j1 0.0164, j1->j2 0.054, j2->j3 0.0384; thumb j1->j2 0.0177,
    # j2->j3 0.0514, and j0->j1 the published (-0.027, 0.005, 0.0399) of the thumb base link
    # (x toward the fingertips, y the grasping face, z along the thumb) in the palm frame.
    assert np.linalg.norm(model.body_pos[_body(model, "index_link_1")]) == pytest.approx(0.0164)
    assert np.linalg.norm(model.body_pos[_body(model, "index_link_2")]) == pytest.approx(0.054)
    assert np.linalg.norm(model.body_pos[_body(model, "index_link_3")]) == pytest.approx(0.0384)
    np.testing.assert_allclose(model.body_pos[_body(model, "thumb_link_1")], [-0.027, -0.0399, 0.005], atol=1e-9)
    assert np.linalg.norm(model.body_pos[_body(model, "thumb_link_2")]) == pytest.approx(0.0177)
    assert np.linalg.norm(model.body_pos[_body(model, "thumb_link_3")]) == pytest.approx(0.0514)


def test_hand_joint_axes_follow_published_allegro(model):
    """Palm frame: fingers along +x, grasping face +z. Finger j0 rolls the finger about its own
    axis, j1..j3 flex it toward the face; thumb j0 swings it in front of the palm, j1 rolls it
    about its own axis (-y), j2, j3 flex it toward the fingers."""
    def axis(name):
        return model.jnt_axis[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)]
    for finger in ("index", "middle", "ring"):
        np.testing.assert_allclose(axis(f"{finger}_joint_0"), [1, 0, 0])
        for j in (1, 2, 3):
            np.testing.assert_allclose(axis(f"{finger}_joint_{j}"), [0, -1, 0])
    thumb = [[-1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, 1]]
    for j in range(4):
        np.testing.assert_allclose(axis(f"thumb_joint_{j}"), thumb[j])
    # Flexing a finger moves its tip toward the grasping face; the thumb, swung in front of
    # the palm and flexed, moves its tip toward the fingers.
    d = mujoco.MjData(model)
    palm = _body(model, "palm")

    def tip(site, q):
        d.qpos[:] = 0.0
        d.qpos[7:] = q
        mujoco.mj_kinematics(model, d)
        return d.xmat[palm].reshape(3, 3).T @ (d.site(site).xpos - d.xpos[palm])
    open_ = [0.0] * 12 + [1.5, 0.0, 0.0, 0.0]
    closed = [0.0, 0.8, 0.8, 0.8] * 3 + [1.5, 0.0, 0.8, 0.8]
    assert tip("index_tip", closed)[2] > tip("index_tip", open_)[2] + 0.05
    assert tip("thumb_tip", closed)[0] > tip("thumb_tip", open_)[0] + 0.05


@pytest.mark.parametrize("rpy, quat", [
    ((math.pi / 2, 0.0, 0.0), (C45, C45, 0.0, 0.0)),  # half-angle 45 deg about x
    ((0.0, math.pi / 2, 0.0), (C45, 0.0, C45, 0.0)),  # about y
    ((0.0, 0.0, math.pi), (0.0, 0.0, 0.0, 1.0)),  # half turn about z: (cos 90, 0, 0, sin 90)
    # Rz(pi) Rx(pi/2) = (0,0,0,1) * (c45, s45, 0, 0) = (0, 0, s45, c45)
    ((math.pi / 2, 0.0, math.pi), (0.0, 0.0, C45, C45)),
])
def test_quat_from_rpy_hand_computed(rpy, quat):
    np.testing.assert_allclose(quat_from_rpy(*rpy), quat, atol=1e-12)


def test_quat_from_rpy_matches_mujoco_extrinsic_xyz():
    rng = np.random.default_rng(0)
    for rpy in rng.uniform(-math.pi, math.pi, size=(5, 3)):
        q = np.zeros(4)
        mujoco.mju_euler2Quat(q, rpy, "XYZ")  # upper case: fixed (extrinsic) axes = URDF rpy
        np.testing.assert_allclose(quat_from_rpy(*rpy), q, atol=1e-12)


# ---- the user-MJCF contract ----------------------------------------------------------------

def _write(tmp_path, xml: str, name="robot.xml") -> str:
    path = tmp_path / name
    path.write_text(xml)
    return str(path)


def test_user_robot_accepts_own_xml(tmp_path):
    scene = build_scene(EnvConfig(num_envs=2, depth=False, robot_xml=_write(tmp_path, build_robot_xml())))
    reference = build_scene(EnvConfig(num_envs=2, depth=False))
    assert scene.mjm.nq == reference.mjm.nq and scene.mjm.nu == reference.mjm.nu
    np.testing.assert_array_equal(scene.qpos_adr, reference.qpos_adr)
    np.testing.assert_array_equal(scene.actuator_ids, reference.actuator_ids)


def test_user_robot_in_degrees_with_its_own_sensors(tmp_path):
    """MJCF's default angle unit is the degree, and a robot may bring sensors of its own."""
    import re

    def in_degrees(joint: re.Match) -> str:
        lo, hi = (math.degrees(float(v)) for v in joint.group(2).split())
        return f'{joint.group(1)}range="{lo!r} {hi!r}"'

    xml = re.sub(r'(<joint [^>]*?)range="([^"]+)"', in_degrees, build_robot_xml().replace('angle="radian"', 'angle="degree"'))
    xml = xml.replace("</mujoco>", '<sensor><jointpos joint="iiwa_joint_1"/><jointvel joint="iiwa_joint_1"/></sensor></mujoco>')
    scene = build_scene(EnvConfig(num_envs=2, depth=False, robot_xml=_write(tmp_path, xml)))
    reference = build_scene(EnvConfig(num_envs=2, depth=False))
    np.testing.assert_allclose(scene.jnt_range, reference.jnt_range, rtol=1e-12)
    assert scene.tip_force_adr.tolist() == (reference.tip_force_adr + 2).tolist()  # after the robot's two


def test_user_robot_missing_actuator_is_named(tmp_path):
    xml = build_robot_xml()
    start = xml.index('<position name="ring_joint_2"')
    xml = xml[:start] + xml[xml.index("/>", start) + 2:]  # drop that actuator, keep the joint
    with pytest.raises(RobotModelError, match="actuator ring_joint_2"):
        build_scene(EnvConfig(num_envs=2, depth=False, robot_xml=_write(tmp_path, xml)))


def test_user_robot_missing_palm_is_named(tmp_path):
    xml = build_robot_xml().replace('name="palm"', 'name="hand_root"')
    with pytest.raises(RobotModelError, match="body palm"):
        build_scene(EnvConfig(num_envs=2, depth=False, robot_xml=_write(tmp_path, xml)))


@pytest.mark.parametrize("old, new, missing", [
    ("ring_joint_2", "ring_jointX2", "ring_joint_2"),  # renamed everywhere (joint and actuator ref)
    ('name="ring_tip"', 'name="ring_end"', "site ring_tip"),
])
def test_user_robot_missing_joint_or_site_is_named(tmp_path, old, new, missing):
    xml = build_robot_xml().replace(old, new)
    with pytest.raises(RobotModelError, match=missing):
        build_scene(EnvConfig(num_envs=2, depth=False, robot_xml=_write(tmp_path, xml)))


def test_user_robot_nonexistent_path(tmp_path):
    with pytest.raises(RobotModelError, match="does not exist"):
        build_scene(EnvConfig(num_envs=2, depth=False, robot_xml=str(tmp_path / "nope.xml")))


def test_user_robot_unparsable(tmp_path):
    with pytest.raises(RobotModelError, match="does not parse"):
        build_scene(EnvConfig(num_envs=2, depth=False, robot_xml=_write(tmp_path, "<mujoco><worldbody>")))
