"""KUKA LBR iiwa 7 R800 + Allegro hand, built as MJCF from published kinematics.

No third-party asset is used: links are primitive capsules and boxes placed on the joint
origins of the iiwa7 URDF lineage; the hand is our primitive Allegro with the published
finger-root offsets, segment lengths and limits.

Naming contract (what the environment needs from any robot MJCF, ours or a user's):
  joints     ``iiwa_joint_1`` .. ``iiwa_joint_7``, then ``{index,middle,ring,thumb}_joint_{0..3}``
             (23 hinge joints, in this order in ``ROBOT_JOINTS``)
  actuators  one position actuator per joint, named like the joint
  body       ``palm`` (the hand's root body)
  sites      ``palm_center`` (on the grasping face) and ``{index,middle,ring,thumb}_tip``
Collision: robot geoms use contype=1, conaffinity=0 (no self-collision); the scene's table
and object collide with them.
"""

from __future__ import annotations

import mujoco
import numpy as np

ARM_JOINTS = tuple(f"iiwa_joint_{i}" for i in range(1, 8))
FINGERS = ("index", "middle", "ring", "thumb")
HAND_JOINTS = tuple(f"{f}_joint_{j}" for f in FINGERS for j in range(4))
ROBOT_JOINTS = ARM_JOINTS + HAND_JOINTS  # 23
TIP_SITES = tuple(f"{f}_tip" for f in FINGERS)
PALM_BODY = "palm"
PALM_SITE = "palm_center"

# iiwa7 joint origins in the parent link frame: (xyz, rpy), URDF convention.
ARM_ORIGINS = (
    ((0.0, 0.0, 0.1575), (0.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.1825), (np.pi / 2, 0.0, np.pi)),
    ((0.0, 0.184, 0.0), (np.pi / 2, 0.0, np.pi)),
    ((0.0, 0.0, 0.216), (np.pi / 2, 0.0, 0.0)),
    ((0.0, 0.184, 0.0), (-np.pi / 2, np.pi, 0.0)),
    ((0.0, 0.0607, 0.216), (np.pi / 2, 0.0, 0.0)),
    ((0.0, 0.081, 0.0607), (-np.pi / 2, np.pi, 0.0)),
)
FLANGE_Z = 0.071
ARM_LIMITS = (2.967, 2.094, 2.967, 2.094, 2.967, 2.094, 3.054)
ARM_MASSES = (3.45, 3.48, 4.06, 3.48, 2.16, 2.35, 3.13)
ARM_RADII = (0.065, 0.065, 0.06, 0.06, 0.055, 0.05, 0.045)
ARM_KP = (300.0, 300.0, 300.0, 300.0, 100.0, 50.0, 25.0)
ARM_KD = (45.0, 45.0, 45.0, 45.0, 20.0, 15.0, 15.0)
ARM_EFFORT = 300.0
# Reflected rotor inertia: the iiwa's gearboxes make it large; it also keeps the explicit
# position-gain term stable at the 120 Hz physics step.
ARM_ARMATURE = 0.1

PALM_MOUNT_POS = (-0.0082, -0.0206, 0.1519)
PALM_MOUNT_QUAT = (0.6533, 0.2706, -0.6533, 0.2706)  # wxyz
PALM_MASS = 0.4154
# Palm frame: fingers extend along +x, fingers spread along y, the grasping face is +z
# (it faces the table in the start pose).
PALM_HALF = (0.055, 0.062, 0.02)
PALM_CENTER = (-0.002, 0.0088, -0.02)
PALM_SITE_POS = (0.07, -0.03, 0.03)  # grasp centre: under the index-middle roots, in front of the face
# Joint-0 origins: the published ones relative to the middle finger's, in this palm frame
# (the thumb's sat 4.4 cm further toward the wrist until 2026-11-22).
FINGER_ROOTS = {
    "index": (0.0514, -0.0363, -0.0113),
    "middle": (0.0537, 0.0088, -0.0113),
    "ring": (0.0514, 0.0539, -0.0113),
    "thumb": (0.0070, -0.0105, -0.0295),
}
FINGER_KNUCKLE = 0.0164  # j0 -> j1, along the finger
FINGER_SEGMENTS = (0.054, 0.0384, 0.0267)  # j1 -> j2, j2 -> j3, j3 -> pad centre
# Thumb j0 -> j1 offset in the palm frame: the published (-0.027, 0.005, 0.0399) in the
# thumb base link's frame (x toward the fingertips, y the grasping face, z along the thumb),
# without its 5 deg tilt.
THUMB_KNUCKLE = (-0.027, -0.0399, 0.005)
THUMB_SEGMENTS = (0.0177, 0.0514, 0.0423)  # j1 -> j2, j2 -> j3, j3 -> pad centre
TIP_EXTRA = 0.0157  # pad centre -> tip site
FINGER_RADIUS = 0.0098
PAD_RADIUS = 0.012
FINGER_LIMITS = ((-0.5585, 0.5585), (-0.2792, 1.7278), (-0.2792, 1.7278), (-0.2792, 1.7278))
THUMB_LIMITS = ((0.2792, 1.5708), (-0.3316, 1.1519), (-0.2792, 1.7278), (-0.2792, 1.7628))
HAND_MASS_PER_SEGMENT = (0.0119, 0.065, 0.0355, 0.0264)
HAND_KP, HAND_KD, HAND_EFFORT = 3.0, 0.1, 0.5
HAND_ARMATURE = 0.01
# Joint friction (frictionloss) that a joint-friction scale of 1 gives, N·m: the lineage's
# per-joint friction (arm 1, fingers 0.01), which it scales by ADR's U(0, 5). One value for all
# 23 joints would lock the fingers: friction above their 0.5 N·m effort holds them still.
JOINT_FRICTION_UNIT_NM = (1.0,) * len(ARM_JOINTS) + (0.01,) * len(HAND_JOINTS)

START_ARM = (-0.85, 0.0, 0.76, 1.25, -1.76, 0.90, 0.64)
# Thumb: swung in front of the palm, no roll (j1), curled (j2, j3) so its tip sits in front
# of the index and middle fingers.
START_HAND = (0.0, 0.3, 0.3, 0.3) * 3 + (1.5, 0.0, 1.0, 0.5)
START_QPOS = np.array(START_ARM + START_HAND)  # (23,)


def quat_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF fixed-axis rpy (R = Rz(yaw) Ry(pitch) Rx(roll)) as a MuJoCo wxyz quaternion:
    MuJoCo's extrinsic "XYZ" sequence."""
    quat = np.zeros(4)
    mujoco.mju_euler2Quat(quat, np.array([roll, pitch, yaw], dtype=float), "XYZ")
    return quat


def _v(x) -> str:
    return " ".join(f"{float(a):.6g}" for a in x)


def _arm_xml() -> tuple[str, str]:
    """Nested link bodies from link1 to link7; returns (opening tags, closing tags)."""
    opening, closing = [], []
    for i, (xyz, rpy) in enumerate(ARM_ORIGINS):
        nxt = ARM_ORIGINS[i + 1][0] if i + 1 < len(ARM_ORIGINS) else (0.0, 0.0, FLANGE_Z)
        lim = ARM_LIMITS[i]
        opening.append(
            f'<body name="iiwa_link_{i + 1}" pos="{_v(xyz)}" quat="{_v(quat_from_rpy(*rpy))}">'
            f'<joint name="{ARM_JOINTS[i]}" axis="0 0 1" range="{-lim} {lim}" armature="{ARM_ARMATURE}"/>'
            f'<geom class="robot" type="capsule" fromto="0 0 0 {_v(nxt)}" size="{ARM_RADII[i]}" '
            f'mass="{ARM_MASSES[i]}" rgba="1 0.45 0.05 1"/>'
        )
        closing.append("</body>")
    return "".join(opening), "".join(closing)


def _chain_xml(finger: str) -> str:
    """One finger (or the thumb) as four nested bodies, segments along the local +x (-y for
    the thumb), flexion curling toward the palm's grasping face (+z).

    Joint axes follow the published Allegro kinematics, in our palm frame (the published
    palm frame's finger axis +z, face normal +x and index side +y are our +x, +z and -y).
    Fingers: j0 rotates the finger about its own long axis (+x), which turns the plane the
    finger flexes in; j1..j3 flex about -y. Thumb: j0 about -x swings it from the palm plane
    (pointing -y) in front of the palm; j1 rotates it about its own long axis (-y at j0 = 0);
    j2, j3 flex about +z, curling it toward the fingers (+x)."""
    thumb = finger == "thumb"
    limits = THUMB_LIMITS if thumb else FINGER_LIMITS
    d = np.array([0.0, -1.0, 0.0]) if thumb else np.array([1.0, 0.0, 0.0])
    if thumb:
        axes = ((-1, 0, 0), (0, -1, 0), (0, 0, 1), (0, 0, 1))
        offsets = (np.array(THUMB_KNUCKLE),) + tuple(d * s for s in THUMB_SEGMENTS)  # body j spans offsets[j]
    else:
        axes = ((1, 0, 0), (0, -1, 0), (0, -1, 0), (0, -1, 0))
        offsets = tuple(d * s for s in (FINGER_KNUCKLE,) + FINGER_SEGMENTS)
    xml, pos = [], np.array(FINGER_ROOTS[finger])
    for j in range(4):
        seg = offsets[j]
        xml.append(
            f'<body name="{finger}_link_{j}" pos="{_v(pos)}">'
            f'<joint name="{finger}_joint_{j}" axis="{_v(axes[j])}" range="{_v(limits[j])}" armature="{HAND_ARMATURE}"/>'
            f'<geom class="robot" type="capsule" fromto="0 0 0 {_v(seg)}" size="{FINGER_RADIUS}" '
            f'mass="{HAND_MASS_PER_SEGMENT[j]}" rgba="0.15 0.15 0.15 1"/>'
        )
        if j == 3:
            xml.append(
                f'<geom class="pad" type="sphere" pos="{_v(seg)}" size="{PAD_RADIUS}" mass="0.005"/>'
                f'<site name="{finger}_tip" pos="{_v(seg + d * TIP_EXTRA)}" size="0.004"/>'
            )
        pos = seg
    xml.append("</body>" * 4)
    return "".join(xml)


def _hand_xml() -> str:
    body = [
        f'<body name="{PALM_BODY}" pos="{_v(PALM_MOUNT_POS)}" quat="{_v(PALM_MOUNT_QUAT)}">',
        f'<geom class="robot" type="box" pos="{_v(PALM_CENTER)}" size="{_v(PALM_HALF)}" mass="{PALM_MASS}" rgba="0.15 0.15 0.15 1"/>',
        f'<site name="{PALM_SITE}" pos="{_v(PALM_SITE_POS)}" size="0.005"/>',
    ]
    body += [_chain_xml(f) for f in FINGERS]
    body.append("</body>")
    return "".join(body)


def _actuators_xml() -> str:
    acts = []
    for i, name in enumerate(ARM_JOINTS):
        lim = ARM_LIMITS[i]
        acts.append(
            f'<position name="{name}" joint="{name}" kp="{ARM_KP[i]}" kv="{ARM_KD[i]}" '
            f'ctrlrange="{-lim} {lim}" forcerange="{-ARM_EFFORT} {ARM_EFFORT}"/>'
        )
    for f in FINGERS:
        limits = THUMB_LIMITS if f == "thumb" else FINGER_LIMITS
        for j in range(4):
            name = f"{f}_joint_{j}"
            acts.append(
                f'<position name="{name}" joint="{name}" kp="{HAND_KP}" kv="{HAND_KD}" '
                f'ctrlrange="{_v(limits[j])}" forcerange="{-HAND_EFFORT} {HAND_EFFORT}"/>'
            )
    return "".join(acts)


def build_robot_xml() -> str:
    """The robot as a complete MJCF document (base fixed at the world origin)."""
    arm_open, arm_close = _arm_xml()
    adapter = '<geom class="visual" type="cylinder" fromto="0 0 0.071 0 0 0.13" size="0.04" rgba="0.3 0.3 0.3 1"/>'
    return f"""<mujoco model="iiwa7_allegro">
  <compiler angle="radian" autolimits="true"/>
  <default>
    <joint damping="0" frictionloss="0"/>
    <default class="robot"><geom contype="1" conaffinity="0" condim="3" friction="1 0.005 0.0001" group="1"/></default>
    <default class="pad"><geom contype="1" conaffinity="0" condim="4" friction="1 0.005 0.0001" group="1" rgba="0.9 0.9 0.9 1"/></default>
    <default class="visual"><geom contype="0" conaffinity="0" group="1" mass="0"/></default>
  </default>
  <worldbody>
    <body name="iiwa_link_0">
      <geom class="visual" type="cylinder" fromto="0 0 0 0 0 0.1575" size="0.1" rgba="0.4 0.4 0.4 1"/>
      {arm_open}{adapter}{_hand_xml()}{arm_close}
    </body>
  </worldbody>
  <actuator>{_actuators_xml()}</actuator>
</mujoco>"""
