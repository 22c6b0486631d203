"""Compact depth images: how rollouts store them and sims send them, and how the encoder
reads them back. float16 metres or uint16 millimetres, 2 bytes a pixel either way.

Images stay compact until the depth encoder decodes them a chunk at a time, so a learner
never holds float32 images for all its worlds at once.
"""

from __future__ import annotations

import torch

IMAGE_TORCH_DTYPES = {"float16": torch.float16, "uint16mm": torch.uint16}


def select(x: torch.Tensor, dim: int, ids: torch.Tensor) -> torch.Tensor:
    """x.index_select(dim, ids) for any dtype: torch's CUDA gather kernels have no unsigned
    types, so a uint16 image moves as its int16 bits (the same bytes)."""
    if x.dtype == torch.uint16:
        return x.view(torch.int16).index_select(dim, ids).view(torch.uint16)
    return x.index_select(dim, ids)


def depth_to_uint16_mm(depth_m: torch.Tensor) -> torch.Tensor:
    """Metres -> whole millimetres in uint16, rounded, saturating at 0 and 65535 mm."""
    return (depth_m.float() * 1000.0).round().clamp(0.0, 65535.0).to(torch.uint16)


def uint16_mm_to_depth(depth_mm: torch.Tensor) -> torch.Tensor:
    """uint16 millimetres -> float32 metres."""
    return depth_mm.float() * 1e-3


def encode_depth(depth: torch.Tensor, image_dtype: str) -> torch.Tensor:
    """Metres (any float dtype) -> the compact ``image_dtype``. An image already in that
    dtype is returned as it is, so encoding twice changes nothing."""
    if depth.dtype == IMAGE_TORCH_DTYPES[image_dtype]:
        return depth
    return depth_to_uint16_mm(depth) if image_dtype == "uint16mm" else depth.to(torch.float16)


def decode_depth(image: torch.Tensor) -> torch.Tensor:
    """Compact (or float) depth -> float32 metres."""
    return uint16_mm_to_depth(image) if image.dtype == torch.uint16 else image.float()
