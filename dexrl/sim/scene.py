"""Scene assembly: robot + table + one object slot + cameras, compiled once for all worlds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from dexrl.config.env import CameraConfig, EnvConfig
from dexrl.sim import objects as obj
from dexrl.sim.robot import PALM_BODY, PALM_SITE, ROBOT_JOINTS, START_QPOS, TIP_SITES, build_robot_xml

TABLE_POS = (-0.5725, 0.088, 0.235)
TABLE_HALF = (0.725 / 2, 1.16 / 2, 0.03 / 2)
TABLE_TOP_Z = TABLE_POS[2] + TABLE_HALF[2]  # 0.25
OBJECT_SPAWN = (-0.55, 0.10, 0.5)
GOAL = (-0.5, 0.0, 0.75)
CAMERAS = ("depth", "rgb_left", "rgb_right", "third_person")
# Collision bits: robot (contype 1) touches table/object (conaffinity 1); object and table
# (contype 2) touch each other and the object (conaffinity 2).
ENV_CONTYPE, TABLE_CONAFFINITY, OBJECT_CONAFFINITY = 2, 1, 3


class RobotModelError(ValueError):
    """A robot MJCF that does not follow the naming contract."""


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def optical_to_mujoco(quat_optical) -> np.ndarray:
    """ROS optical frame (+z forward, +y down) -> MuJoCo camera frame (-z forward, +y up):
    a half turn about the camera's x axis."""
    q = _quat_mul(np.asarray(quat_optical, float), np.array([0.0, 1.0, 0.0, 0.0]))
    return q / np.linalg.norm(q)


def fovy_deg(cam: CameraConfig) -> float:
    """MuJoCo's vertical field of view from the horizontal one and the aspect ratio."""
    return float(np.degrees(2 * np.arctan(np.tan(np.radians(cam.hfov_deg) / 2) * cam.height / cam.width)))


def _robot_spec(robot_xml: str | None) -> mujoco.MjSpec:
    if robot_xml is None:
        return mujoco.MjSpec.from_string(build_robot_xml())
    path = Path(robot_xml).expanduser()
    if not path.is_file():
        raise RobotModelError(f"robot MJCF {str(path)!r} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        return mujoco.MjSpec.from_file(str(path))
    except Exception as exc:  # MuJoCo raises plain ValueError with its parser message
        raise RobotModelError(f"robot MJCF {str(path)!r} does not parse: {exc}") from None


def _add_mesh(spec: mujoco.MjSpec, asset: obj.ObjectAsset) -> None:
    mesh = spec.add_mesh(name=asset.name)
    mesh.uservert = np.asarray(asset.vertices, float).ravel().tolist()


def _add_object_body(spec: mujoco.MjSpec, asset: obj.ObjectAsset) -> None:
    body = spec.worldbody.add_body(name="object", pos=list(OBJECT_SPAWN))
    body.add_freejoint(name="object_joint")
    body.add_geom(
        name="object", type=mujoco.mjtGeom.mjGEOM_MESH, meshname=asset.name, density=obj.DENSITY,
        contype=ENV_CONTYPE, conaffinity=OBJECT_CONAFFINITY, condim=4, rgba=list(asset.rgba), group=0,
    )


def _add_cameras(spec: mujoco.MjSpec, cam: CameraConfig) -> None:
    quat = optical_to_mujoco(cam.quat_optical)
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, quat)
    right = np.asarray(cam.pos) + rot.reshape(3, 3) @ np.array([cam.stereo_baseline_m, 0.0, 0.0])
    fovy = fovy_deg(cam)
    wb = spec.worldbody
    for name, pos in (("depth", cam.pos), ("rgb_left", cam.pos), ("rgb_right", right)):
        wb.add_camera(name=name, pos=list(pos), quat=list(quat), fovy=fovy, resolution=[cam.width, cam.height])
    # A fixed view for videos, looking at the table from the robot's side.
    wb.add_camera(name="third_person", pos=[-0.05, -0.75, 0.75], xyaxes=[0.83, 0.56, 0, -0.25, 0.37, 0.89], fovy=50)


def _add_touch_sensors(spec: mujoco.MjSpec) -> None:
    """A touch zone (sphere) around each fingertip; its sensor sums contact normal forces."""
    for tip in TIP_SITES:
        site = spec.site(tip)
        zone = site.parent.add_site(name=f"{tip}_touch", pos=list(site.pos), size=[0.022, 0, 0], group=4)
        spec.add_sensor(name=f"{tip}_force", type=mujoco.mjtSensor.mjSENS_TOUCH,
                        objtype=mujoco.mjtObj.mjOBJ_SITE, objname=zone.name)


def check_spec_contract(spec: mujoco.MjSpec) -> None:
    """Raise RobotModelError naming what the robot MJCF lacks from the naming contract."""
    missing = [n for n in ROBOT_JOINTS if spec.joint(n) is None]
    missing += [f"actuator {n}" for n in ROBOT_JOINTS if spec.actuator(n) is None]
    missing += [f"body {PALM_BODY}"] * (spec.body(PALM_BODY) is None)
    missing += [f"site {n}" for n in (PALM_SITE, *TIP_SITES) if spec.site(n) is None]
    if missing:
        raise RobotModelError(
            "robot MJCF does not follow dexrl's naming contract (see dexrl/sim/robot.py); missing: "
            + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        )


def build_spec(cfg: EnvConfig, assets: list[obj.ObjectAsset]) -> mujoco.MjSpec:
    spec = _robot_spec(cfg.robot_xml)
    check_spec_contract(spec)
    spec.option.timestep = cfg.sim_dt
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    spec.option.iterations = cfg.solver_iterations
    spec.option.ls_iterations = cfg.ls_iterations
    # Joint friction is randomized per world; a tiny nonzero value makes the model allocate
    # its 23 friction-loss rows once, so randomizing it later needs no recompilation.
    for name in ROBOT_JOINTS:
        spec.joint(name).frictionloss = max(spec.joint(name).frictionloss, 1e-4)
    # The real iiwa compensates gravity in its controller; MuJoCo's gravcomp does the same.
    for body in spec.bodies:
        body.gravcomp = 1.0
    _add_touch_sensors(spec)
    wb = spec.worldbody
    wb.add_light(name="sun", pos=[-0.5, -0.5, 2.0], dir=[0.2, 0.3, -1.0], diffuse=[0.8, 0.8, 0.8])
    wb.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], rgba=[0.35, 0.37, 0.4, 1],
                contype=ENV_CONTYPE, conaffinity=TABLE_CONAFFINITY)
    wb.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, pos=list(TABLE_POS), size=list(TABLE_HALF),
                rgba=[0.55, 0.42, 0.3, 1], contype=ENV_CONTYPE, conaffinity=TABLE_CONAFFINITY)
    wb.add_site(name="goal", pos=list(GOAL), size=[0.01, 0, 0], rgba=[0.1, 0.9, 0.1, 0.5], group=3)
    for asset in assets:
        _add_mesh(spec, asset)
    _add_object_body(spec, assets[0])
    _add_cameras(spec, cfg.camera)
    return spec


@dataclass
class Scene:
    """The compiled scene and the indices the environment needs."""

    mjm: mujoco.MjModel
    spec: mujoco.MjSpec
    props: obj.ObjectProperties
    joint_ids: np.ndarray  # (23,) robot joint ids
    qpos_adr: np.ndarray  # (23,) robot joint qpos addresses
    dof_adr: np.ndarray  # (23,) robot joint dof addresses
    actuator_ids: np.ndarray  # (23,)
    jnt_range: np.ndarray  # (23, 2)
    palm_body: int
    palm_site: int
    tip_sites: np.ndarray  # (4,)
    tip_force_adr: np.ndarray  # (4,) sensordata addresses of the fingertip touch sensors
    object_body: int
    object_geom: int
    object_qpos_adr: int  # 7 values: position, quaternion
    object_dof_adr: int  # 6 values
    robot_geoms: np.ndarray  # geoms whose friction is randomized with the object's
    camera_ids: dict[str, int]

    def to_xml(self) -> str:
        return self.spec.to_xml()


def _index(m: mujoco.MjModel, kind, name: str) -> int:
    return mujoco.mj_name2id(m, kind, name)


def build_scene(cfg: EnvConfig) -> Scene:
    assets = obj.load_objects(cfg.objects)
    spec = build_spec(cfg, assets)
    try:
        mjm = spec.compile()
    except ValueError as exc:
        raise RobotModelError(f"scene does not compile: {exc}") from None
    J = mujoco.mjtObj
    joints = [_index(mjm, J.mjOBJ_JOINT, n) for n in ROBOT_JOINTS]
    obj_jnt = _index(mjm, J.mjOBJ_JOINT, "object_joint")
    object_body = _index(mjm, J.mjOBJ_BODY, "object")
    robot_geoms = np.nonzero((mjm.geom_contype == 1) & (mjm.geom_bodyid != object_body))[0]
    props = object_properties(assets, cfg)
    # A user's robot may bring meshes of its own: address the objects' meshes by name.
    props.mesh_id = np.array([_index(mjm, J.mjOBJ_MESH, name) for name in props.names])
    return Scene(
        mjm=mjm, spec=spec, props=props, joint_ids=np.array(joints),
        qpos_adr=mjm.jnt_qposadr[joints].copy(), dof_adr=mjm.jnt_dofadr[joints].copy(),
        actuator_ids=np.array([_index(mjm, J.mjOBJ_ACTUATOR, n) for n in ROBOT_JOINTS]),
        jnt_range=mjm.jnt_range[joints].copy(),
        palm_body=_index(mjm, J.mjOBJ_BODY, PALM_BODY), palm_site=_index(mjm, J.mjOBJ_SITE, PALM_SITE),
        tip_sites=np.array([_index(mjm, J.mjOBJ_SITE, n) for n in TIP_SITES]),
        # After any sensors a user's robot brings.
        tip_force_adr=mjm.sensor_adr[[_index(mjm, J.mjOBJ_SENSOR, f"{n}_force") for n in TIP_SITES]].copy(),
        object_body=object_body, object_geom=_index(mjm, J.mjOBJ_GEOM, "object"),
        object_qpos_adr=int(mjm.jnt_qposadr[obj_jnt]), object_dof_adr=int(mjm.jnt_dofadr[obj_jnt]),
        robot_geoms=robot_geoms, camera_ids={n: _index(mjm, J.mjOBJ_CAMERA, n) for n in CAMERAS},
    )


def object_properties(assets: list[obj.ObjectAsset], cfg: EnvConfig) -> obj.ObjectProperties:
    """Compile each object alone on a free body (the same structure as the scene's object
    slot) and read back what a world needs to hold it: mesh frame, bounds, inertia."""
    rows = []
    for k, asset in enumerate(assets):
        spec = mujoco.MjSpec()
        _add_mesh(spec, asset)
        _add_object_body(spec, asset)
        try:
            m = spec.compile()
        except ValueError as exc:
            raise ValueError(f"object {asset.name!r} does not compile as a convex mesh: {exc}") from None
        mass = float(m.body_mass[1])
        scale = np.clip(mass, obj.MIN_MASS_KG, obj.MAX_MASS_KG) / mass
        aabb = m.geom_aabb[0].reshape(2, 3)  # (centre, half-extents) in the geom frame
        volume = mass / obj.DENSITY
        rows.append(dict(
            mesh_id=k, geom_pos=m.geom_pos[0].copy(), geom_quat=m.geom_quat[0].copy(),
            geom_aabb=m.geom_aabb[0].copy(), geom_rbound=float(m.geom_rbound[0]), geom_rgba=np.array(asset.rgba),
            body_mass=mass * scale, body_inertia=m.body_inertia[1] * scale, body_ipos=m.body_ipos[1].copy(),
            body_iquat=m.body_iquat[1].copy(), body_invweight0=m.body_invweight0[1] / scale,
            descriptor=obj.descriptor(asset.kind, aabb[1], volume),
        ))
    stacked = {key: np.stack([np.asarray(r[key]) for r in rows]) for key in rows[0]}
    return obj.ObjectProperties(**stacked, names=[a.name for a in assets])


def start_qpos(scene: Scene) -> np.ndarray:
    """The model's qpos with the robot at its start pose and the object at the spawn point."""
    q = scene.mjm.qpos0.copy()
    q[scene.qpos_adr] = np.clip(START_QPOS, scene.jnt_range[:, 0], scene.jnt_range[:, 1])
    q[scene.object_qpos_adr:scene.object_qpos_adr + 3] = OBJECT_SPAWN
    return q
