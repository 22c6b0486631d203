"""`dexrl play`: roll a policy out and write a video of world 0 (third person | depth | stereo)."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dexrl.config.env import EnvConfig
from dexrl.envs.grasp import GraspEnv
from dexrl.policies import ScriptedGrasp

VIDEO_HEIGHT = 240


def _fit(img: torch.Tensor, height: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, height, W * height / H) uint8, nearest neighbour."""
    h, w = img.shape[-2:]
    return F.interpolate(img[None].float(), size=(height, round(w * height / h)), mode="nearest")[0].to(torch.uint8)


def _depth_rgb(depth: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """(1, H, W) metres -> (3, H, W) uint8 with a perceptual colour map; 0 (no return) is black."""
    d = ((depth[0] - lo) / (hi - lo)).clamp(0, 1).cpu().numpy()
    rgb = matplotlib.colormaps["viridis"](d)[..., :3] * (depth[0].cpu().numpy() > 0)[..., None]
    return torch.from_numpy((rgb * 255).astype(np.uint8)).permute(2, 0, 1)


def frame(env: GraspEnv, world: int = 0) -> np.ndarray:
    """One video frame (H, W, 3) uint8 of ``world``."""
    rig = env.rig
    tiles = [_fit(rig.rgb("third_person")[world].cpu(), VIDEO_HEIGHT)]
    if env.cfg.depth:
        tiles.append(_fit(_depth_rgb(rig.depth(env.step_draws())[world], env.cfg.camera.depth_min_m, env.cfg.camera.depth_max_m), VIDEO_HEIGHT))
    if env.cfg.stereo_rgb:
        stereo = rig.stereo_rgb()[world].cpu()
        tiles += [_fit(stereo[0], VIDEO_HEIGHT), _fit(stereo[1], VIDEO_HEIGHT)]
    return torch.cat(tiles, dim=-1).permute(1, 2, 0).numpy()


POLICIES = ("scripted",)


def make_policy(name: str, env: GraspEnv):
    if name == "scripted":
        return ScriptedGrasp(env)
    raise ValueError(f"unknown policy {name!r}; available: {', '.join(POLICIES)}")


def play(cfg: EnvConfig, policy: str, video: str, seconds: float | None = None, every: int = 2) -> Path:
    """Run ``policy`` for one episode (or ``seconds``) and write ``video`` (.mp4 or .gif)."""
    out = video_path(video)
    env = GraspEnv(cfg, third_person=True)
    pol = make_policy(policy, env)
    env.reset()
    steps = int(round((seconds or cfg.episode_s) / cfg.ctrl_dt)) - 1
    frames = [frame(env)]
    for i in tqdm(range(steps), desc="play", unit="step"):
        env.step(pol.act(None))
        if (i + 1) % every == 0:
            frames.append(frame(env))
    return write_video(out, frames, 1.0 / (cfg.ctrl_dt * every))


def video_path(video: str) -> Path:
    """Checked before any work: a bad name must not cost a whole run."""
    out = Path(video)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"--video must end in .mp4 or .gif, got {video!r}")
    return out


def write_video(out: Path, frames: list, fps: float) -> Path:
    out = video_path(str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":  # imageio's GIF writer takes milliseconds per frame
        imageio.mimsave(out, frames, duration=1000.0 / fps, loop=0)
    else:
        imageio.mimsave(out, frames, fps=fps, macro_block_size=8)
    return out
