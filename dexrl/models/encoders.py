"""Depth image encoder (paper Sec. III-A, Fig. 3).

4 conv layers with 16, 32, 64, 128 filters (kernel/stride 6/2, 4/2, 4/2, 4/2), each
Conv -> ReLU -> LayerNorm over (C, H, W) (the paper names the parts, not their order),
then a fully connected layer from the whole last feature map (flattened, so where things are
in the image survives) to a 32-d embedding.
LayerNorm and that layer need the exact (C, H, W) of every feature map, so those shapes are
computed from the input image size when the encoder is built.

Padding: the paper's resolutions (80x60, 160x120, 320x240) need none and get none. A layer
gets zero padding only when its input is smaller than its kernel in some dimension (tiny
test images such as 32x24): pad = ceil((kernel - size) / 2) on that dimension, the least
padding that leaves a 1-pixel output. This keeps paper shapes exact and tiny images legal.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from dexrl.models.depth_codec import decode_depth


def conv_plan(
    image_hw: tuple[int, int], kernels: tuple[int, ...], strides: tuple[int, ...]
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per layer: ((pad_h, pad_w), (out_h, out_w)). Pure arithmetic, see module docstring.

    Example 160x120 (W x H), i.e. (H, W) = (120, 160):
      k6 s2: (120-6)//2+1 = 58, (160-6)//2+1 = 78;  k4 s2: 28, 38;  k4 s2: 13, 18;  k4 s2: 5, 8.
    """
    size = list(image_hw)
    plan = []
    for k, s in zip(kernels, strides):
        pad = [math.ceil((k - n) / 2) if n < k else 0 for n in size]
        size = [(n + 2 * p - k) // s + 1 for n, p in zip(size, pad)]
        plan.append(((pad[0], pad[1]), (size[0], size[1])))
    return plan


def bf16_autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU bf16 would only be slower here)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class DepthEncoder(nn.Module):
    """(B, C, H, W) depth -> (B, embed_dim) float32 embedding. Depth in float metres, or compact
    (float16 metres, uint16 millimetres; see depth_codec): decoded here, one chunk at a time.
    bf16: the convs and the projection under bf16 autocast (CUDA), when acting as when
    updating: the bulk of the update's activations, halved, while whatever follows the
    embedding runs float32, so the update re-scores actions as they were scored when acting."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: tuple[int, ...] = (16, 32, 64, 128),
        kernels: tuple[int, ...] = (6, 4, 4, 4),
        strides: tuple[int, ...] = (2, 2, 2, 2),
        embed_dim: int = 32,
        chunk: int = 0,
        bf16: bool = False,
    ) -> None:
        super().__init__()
        in_ch, h, w = image_shape
        self.chunk = chunk  # images per forward without autograd (0: all); see ModelConfig.encoder_chunk
        self.bf16 = bf16
        self.image_shape = tuple(image_shape)
        self.plan = conv_plan((h, w), tuple(kernels), tuple(strides))
        layers: list[nn.Module] = []
        for out_ch, k, s, (pad, out_hw) in zip(channels, kernels, strides, self.plan):
            layers += [
                nn.Conv2d(in_ch, out_ch, kernel_size=k, stride=s, padding=pad),
                nn.ReLU(),
                nn.LayerNorm([out_ch, out_hw[0], out_hw[1]]),  # over (C, H, W), per paper
            ]
            in_ch = out_ch
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(in_ch * out_hw[0] * out_hw[1], embed_dim)
        self.embed_dim = embed_dim

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        if tuple(depth.shape[1:]) != self.image_shape:
            raise ValueError(f"DepthEncoder built for {self.image_shape}, got image {tuple(depth.shape[1:])}.")
        if self.chunk and not torch.is_grad_enabled() and depth.shape[0] > self.chunk:
            # Nothing is saved for backward here, so chunks bound the conv activations to a
            # fixed cost however many worlds act at once.
            return torch.cat([self._encode(part) for part in depth.split(self.chunk)])  # (B, E)
        return self._encode(depth)

    def _encode(self, depth: torch.Tensor) -> torch.Tensor:
        # The convs want the weights' dtype (autocast still lowers them to bf16).
        x = decode_depth(depth).to(self.proj.weight.dtype)  # (B, C, H, W)
        with bf16_autocast(x.device, self.bf16):
            x = self.convs(x)  # (B, C4, H4, W4)
            embed = self.proj(x.flatten(1))  # (B, C4 * H4 * W4) -> (B, embed_dim)
        return embed.float()
