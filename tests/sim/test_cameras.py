"""Depth and stereo RGB against analytic geometry: a camera looking straight down on the table.

World 0: camera at z = 1.0 over the table centre, its whole view on the table top (z = 0.25)
  -> planar depth 0.75 m everywhere.
World 1: the same cameras moved (per-world cam_pos) to (-0.65, 0.5, 1.2): they see the table
  top at 0.95 m and, past the table's -x and +y edges, the floor at 1.2 m; both lie beyond
  depth_max_m = 0.9, so the masked depth is all 0 while the raw depth keeps them.
"""

import math

import mujoco
import numpy as np
import pytest
import torch

from dexrl.config.env import CameraConfig, EnvConfig
from dexrl.sim.cameras import CameraRig
from dexrl.sim.physics import BatchedPhysics
from dexrl.sim.scene import (GOAL, OBJECT_SPAWN, TABLE_HALF, TABLE_POS, build_scene, fovy_deg,
                             optical_to_mujoco, start_qpos)

W, H = 32, 24
DOWN = CameraConfig(width=W, height=H, pos=(-0.5725, 0.088, 1.0), quat_optical=(0.0, 1.0, 0.0, 0.0),
                    depth_min_m=0.5, depth_max_m=0.9, jitter_pos_m=0.0, jitter_rot_deg=0.0)
CAM1_POS = (-0.65, 0.5, 1.2)


@pytest.fixture(scope="module")
def rig():
    scene = build_scene(EnvConfig(num_envs=2, camera=DOWN, stereo_rgb=True))
    physics = BatchedPhysics(scene, 2)
    rig = CameraRig(physics, DOWN, depth=True, stereo_rgb=True)
    q = start_qpos(scene)
    # Joints at 0 (clipped into limits): the arm stands straight up at x, y ~ 0, out of view
    # (at most 0.45 * 1.2 = 0.53 m off the optical axis at floor level); object far away.
    q[scene.qpos_adr] = np.clip(0.0, *scene.jnt_range.T)
    q[scene.object_qpos_adr:scene.object_qpos_adr + 3] = (5.0, 5.0, 0.5)
    physics.qpos.copy_(torch.as_tensor(q).expand(2, -1))
    # Every camera of world 1 moves with the depth camera, keeping its offset from it (taken
    # before any moves: the depth camera's own move must not shift the RGB cameras' offsets).
    depth_pos = physics.fields["cam_pos"][1, scene.camera_ids["depth"]].clone()
    for name in ("depth", "rgb_left", "rgb_right"):
        cid = scene.camera_ids[name]
        physics.fields["cam_pos"][1, cid] = torch.tensor(CAM1_POS) + physics.fields["cam_pos"][1, cid] - depth_pos
    physics.kinematics()
    rig.render()
    return rig


def test_fovy_from_hfov():
    # fovy = 2 atan(tan(48/2 deg) * 3/4) = 2 atan(0.445229 * 0.75) = 2 atan(0.333922)
    #      = 2 * 18.4653 = 36.9305 deg
    assert fovy_deg(CameraConfig(width=160, height=120, hfov_deg=48.0)) == pytest.approx(36.9305, abs=1e-3)
    assert fovy_deg(CameraConfig(width=80, height=80, hfov_deg=48.0)) == pytest.approx(48.0)


def test_optical_to_mujoco():
    # Optical identity -> half turn about x: (1,0,0,0) * (0,1,0,0) = (0,1,0,0).
    np.testing.assert_allclose(optical_to_mujoco((1.0, 0.0, 0.0, 0.0)), [0.0, 1.0, 0.0, 0.0], atol=1e-12)
    # For the calibrated pose: MuJoCo's forward (-z) is the optical +z, MuJoCo's up (+y) is
    # the optical -y (optical +y points down in the image).
    q_opt = np.array(CameraConfig().quat_optical)
    r_opt, r_mj = np.zeros(9), np.zeros(9)
    mujoco.mju_quat2Mat(r_opt, q_opt / np.linalg.norm(q_opt))
    mujoco.mju_quat2Mat(r_mj, optical_to_mujoco(q_opt))
    r_opt, r_mj = r_opt.reshape(3, 3), r_mj.reshape(3, 3)
    np.testing.assert_allclose(-r_mj[:, 2], r_opt[:, 2], atol=1e-12)
    np.testing.assert_allclose(r_mj[:, 1], -r_opt[:, 1], atol=1e-12)
    np.testing.assert_allclose(r_mj[:, 0], r_opt[:, 0], atol=1e-12)
    # The calibrated camera sees the object resting at the spawn point and at the goal: in
    # the optical frame (x right, y down, z forward) both lie within the 48 x 36.9 deg frustum.
    # E.g. resting object (-0.55, 0.1, 0.26): x/z = 0.34 < tan 24 = 0.445, |y/z| = 0.06 < 0.334.
    cam = CameraConfig()
    tan_x = math.tan(math.radians(cam.hfov_deg) / 2)
    tan_y = math.tan(math.radians(fovy_deg(cam)) / 2)
    for target in ((*OBJECT_SPAWN[:2], 0.26), GOAL):
        x, y, z = r_opt.T @ (np.array(target) - cam.pos)
        assert z > 0 and abs(x / z) < tan_x and abs(y / z) < tan_y, target


def test_compiled_camera_model(rig):
    m, ids = rig.physics.scene.mjm, rig.physics.scene.camera_ids
    assert m.cam_fovy[ids["depth"]] == pytest.approx(fovy_deg(DOWN))
    # Stereo baseline: right = left + 0.065 m along the camera's x (here world x).
    np.testing.assert_allclose(m.cam_pos[ids["rgb_right"]] - m.cam_pos[ids["rgb_left"]], [0.065, 0, 0], atol=1e-9)


def test_depth_is_planar_distance_to_table(rig):
    depth = rig.depth()  # (N, 1, H, W) float32 m
    assert depth.shape == (2, 1, H, W) and depth.dtype == torch.float32
    # Every pixel of world 0 sees the table top: 1.0 - 0.25 = 0.75 m (planar, so corners too).
    torch.testing.assert_close(depth[0], torch.full((1, H, W), 0.75), atol=1e-3, rtol=0)


def _analytic_world1() -> tuple[np.ndarray, np.ndarray]:
    """Planar depth (H, W) of world 1 and a mask of pixels at least 1 px away from an edge."""
    tan_y = math.tan(math.radians(fovy_deg(DOWN)) / 2)
    tan_x = tan_y * W / H
    u = ((np.arange(W) + 0.5) / W * 2 - 1) * tan_x  # ray slope along camera x (= world x)
    v = -((np.arange(H) + 0.5) / H * 2 - 1) * tan_y  # image rows go down = world -y
    table_depth = CAM1_POS[2] - 0.25  # 0.95
    x = CAM1_POS[0] + u[None, :] * table_depth  # (1, W) hit point on the table plane
    y = CAM1_POS[1] + v[:, None] * table_depth  # (H, 1)
    dx = np.abs(x - TABLE_POS[0]) - TABLE_HALF[0]  # < 0 inside the table
    dy = np.abs(y - TABLE_POS[1]) - TABLE_HALF[1]
    on_table = (dx < 0) & (dy < 0)  # (H, W)
    pixel_m = 2 * tan_x * CAM1_POS[2] / W  # one pixel's footprint on the floor
    signed = np.where(on_table, np.maximum(dx, dy), np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)))
    clear = np.abs(signed) > pixel_m  # (H, W): distance to the table's outline > 1 pixel
    return np.where(on_table, table_depth, CAM1_POS[2]), clear


def test_raw_depth_matches_table_and_floor(rig):
    expected, clear = _analytic_world1()
    # The view crosses the table's -x edge (x = -0.935) and +y edge (y = 0.668), not the others.
    assert (expected == 0.95).any() and (expected == 1.2).any()
    assert (expected[:, 0] == 1.2).all() and (expected[0, :] == 1.2).all() and expected[-1, -1] == 0.95
    assert (expected[clear] == 1.2).sum() > 100 and (expected[clear] == 0.95).sum() > 100
    raw = rig._depth_raw[1, 0].numpy()  # (H, W) metres before range masking
    np.testing.assert_allclose(raw[clear], expected[clear], atol=1e-3)


def test_depth_outside_range_is_zero(rig):
    assert (rig._depth_raw[1] > 0.9).all()  # everything world 1 sees is beyond depth_max_m
    assert (rig.depth()[1] == 0).all()


def test_stereo_rgb_pair(rig):
    rgb = rig.stereo_rgb()  # (N, 2, 3, H, W) uint8
    assert rgb.shape == (2, 2, 3, H, W) and rgb.dtype == torch.uint8
    assert rgb.float().std() > 1.0  # not a blank image
    # The right camera sits 6.5 cm to the side: its view of the lit table differs.
    assert not torch.equal(rgb[:, 0], rgb[:, 1])


def test_rgb_channel_order(rig):
    """Channels come out R, G, B: the table (rgba 0.55, 0.42, 0.30) is red > green > blue, the
    floor (0.35, 0.37, 0.40) blue > green > red, under the white (0.8, 0.8, 0.8) light."""
    rgb = rig.stereo_rgb().int()  # (N, 2, 3, H, W)
    r, g, b = rgb[0, 0]  # world 0, left camera (posed as the depth camera): only the table top
    assert ((r > g) & (g > b)).all()
    # World 1's left camera sees the table and, past its edges, the floor (see the depth test).
    depth, clear = _analytic_world1()
    table, floor = [torch.as_tensor((depth == z) & clear) for z in (0.95, 1.2)]
    r, g, b = (c.float() for c in rgb[1, 0])
    assert r[table].mean() > g[table].mean() > b[table].mean()
    assert b[floor].mean() > g[floor].mean() > r[floor].mean()
