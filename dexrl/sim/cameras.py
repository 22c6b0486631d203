"""Batched depth and stereo RGB from MuJoCo Warp's ray-traced renderer, as torch views."""

from __future__ import annotations

import mujoco_warp as mjw
import torch
import torch.nn.functional as F
import warp as wp

from dexrl.config.env import CameraConfig
from dexrl.sim.rng import Draws, Stream, WorldRNG
from dexrl.sim.physics import BatchedPhysics


class CameraRig:
    """Renders the named cameras of every world in one call.

    ``depth`` is (N, 1, H, W) float32 metres with 0 where nothing lies in
    [depth_min_m, depth_max_m]; ``stereo_rgb`` is (N, 2, 3, H, W) uint8 (left, right).
    Depth noise comes from the ``Draws`` passed to ``depth`` (the env's step draws).
    """

    def __init__(self, physics: BatchedPhysics, cam: CameraConfig, depth: bool = True, stereo_rgb: bool = False,
                 third_person: bool = False, third_person_res: tuple[int, int] = (320, 240)):
        self.physics, self.cam = physics, cam
        ids = physics.scene.camera_ids
        wanted = {"depth": depth, "rgb_left": stereo_rgb, "rgb_right": stereo_rgb, "third_person": third_person}
        active = sorted((ids[name], name) for name, on in wanted.items() if on)
        if not active:
            raise ValueError("CameraRig needs at least one camera (depth, stereo_rgb or third_person)")
        self.names = [name for _, name in active]
        res = [third_person_res if n == "third_person" else (cam.width, cam.height) for n in self.names]
        with wp.ScopedDevice(physics.wp_device):
            self.rc = mjw.create_render_context(
                physics.scene.mjm, nworld=physics.num_worlds, cam_res=res,
                render_rgb=[n != "depth" for n in self.names], render_depth=[n == "depth" for n in self.names],
                cam_active=[cid for cid, _ in active], use_shadows=False,
            )
        n = physics.num_worlds
        depth_all = wp.to_torch(self.rc.depth_data)  # (N, total depth pixels) float32 planar metres
        rgb_all = wp.to_torch(self.rc.rgb_data).view(torch.int32)  # (N, total rgb pixels) packed A R G B
        depth_adr, rgb_adr = self.rc.depth_adr.numpy(), self.rc.rgb_adr.numpy()
        self._depth_raw = self._rgb = None
        self._rgb_views, self._res = {}, dict(zip(self.names, res))
        for i, name in enumerate(self.names):
            w, h = self._res[name]
            if name == "depth":
                self._depth_raw = depth_all[:, depth_adr[i]:depth_adr[i] + w * h].view(n, 1, h, w)
            else:
                self._rgb_views[name] = rgb_all[:, rgb_adr[i]:rgb_adr[i] + w * h].view(n, h, w)

    def render(self) -> None:
        p = self.physics
        with wp.ScopedDevice(p.wp_device):
            mjw.refit_bvh(p.model, p.data, self.rc)
            mjw.render(p.model, p.data, self.rc)

    def depth(self, draws: Draws | None = None) -> torch.Tensor:
        """(N, 1, H, W) float32 metres, range-masked and noised as configured with ``draws``
        (default: seed 0, worlds 0..N-1, counter 0)."""
        c = self.cam
        # In place on one copy with one bool mask alive at a time: 5 bytes a pixel at peak
        # (a torch.where over two masks and a zeros tensor took 9, the most of a sim's
        # tensors). A NaN fails both comparisons and becomes 0, as with the where.
        d = self._depth_raw.clone()  # (N, 1, H, W)
        d.masked_fill_((d >= c.depth_min_m).logical_not_(), 0.0)
        d.masked_fill_((d <= c.depth_max_m).logical_not_(), 0.0)
        if draws is None:
            draws = WorldRNG(0, torch.arange(d.shape[0], device=d.device)).at(0)
        return self._noise(d, draws)

    def _noise(self, d: torch.Tensor, draws: Draws) -> torch.Tensor:
        c = self.cam
        _, _, h, w = d.shape
        if c.correlated_noise_m > 0:
            coarse = draws.normal(Stream.CAMERA_CORRELATED, (1, max(h // 8, 1), max(w // 8, 1)))  # (N, 1, h', w')
            field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)  # (N, 1, H, W)
            d = torch.where(d > 0, (d + c.correlated_noise_m * field).clamp(c.depth_min_m, c.depth_max_m), d)
        if c.random_pixel_prob > 0 or c.dropout_prob > 0:
            # One hash per pixel, three U[0, 1) of 21 bits each.
            u_random, u_depth, u_drop = draws.uniforms(Stream.CAMERA_PIXEL, (1, h, w), 3)  # (N, 1, H, W) each
            if c.random_pixel_prob > 0:
                rand_depth = c.depth_min_m + (c.depth_max_m - c.depth_min_m) * u_depth
                d = torch.where(u_random < c.random_pixel_prob, rand_depth, d)
            if c.dropout_prob > 0:
                d = torch.where(u_drop < c.dropout_prob, torch.zeros_like(d), d)
        return d

    def rgb(self, name: str) -> torch.Tensor:
        """(N, 3, H, W) uint8 of one RGB camera."""
        packed = self._rgb_views[name]  # (N, H, W) int32, bytes A R G B from high to low
        chans = [(packed >> shift) & 0xFF for shift in (16, 8, 0)]  # R, G, B
        return torch.stack(chans, dim=1).to(torch.uint8)

    def stereo_rgb(self) -> torch.Tensor:
        """(N, 2, 3, H, W) uint8: left then right."""
        return torch.stack([self.rgb("rgb_left"), self.rgb("rgb_right")], dim=1)
