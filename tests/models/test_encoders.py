"""DepthEncoder: paper shapes, tiny-image padding, parameter count, LayerNorm over (C, H, W)."""

import pytest
import torch
from torch import nn

from dexrl.models import DepthEncoder, conv_plan
from dexrl.models.depth_codec import depth_to_uint16_mm, uint16_mm_to_depth

torch.set_num_threads(1)


def test_conv_plan_paper_160x120_needs_no_padding():
    # (H, W) = (120, 160): k6 s2 -> 58, 78; k4 s2 -> 28, 38; -> 13, 18; -> 5, 8
    plan = conv_plan((120, 160), (6, 4, 4, 4), (2, 2, 2, 2))
    assert plan == [((0, 0), (58, 78)), ((0, 0), (28, 38)), ((0, 0), (13, 18)), ((0, 0), (5, 8))]


def test_conv_plan_tiny_image_pads_only_where_needed():
    # (H, W) = (24, 32): H 24 -> 10 -> 4 -> 1, then 1 < 4: pad ceil(3/2) = 2 -> (1+4-4)//2+1 = 1
    #                    W 32 -> 14 -> 6 -> 2, then 2 < 4: pad ceil(2/2) = 1 -> (2+2-4)//2+1 = 1
    plan = conv_plan((24, 32), (6, 4, 4, 4), (2, 2, 2, 2))
    assert plan == [((0, 0), (10, 14)), ((0, 0), (4, 6)), ((0, 0), (1, 2)), ((2, 1), (1, 1))]


@pytest.mark.parametrize("hw", [(60, 80), (120, 160), (240, 320), (24, 32), (16, 16)])
def test_output_shape(hw):
    enc = DepthEncoder((1, *hw))
    out = enc(torch.rand(2, 1, *hw) * 2.0)
    assert out.shape == (2, 32)
    assert torch.isfinite(out).all()


def test_parameter_count_80x60():
    # (H, W) = (60, 80): maps 28x38, 13x18, 5x8, 1x3
    convs = (1 * 16 * 36 + 16) + (16 * 32 * 16 + 32) + (32 * 64 * 16 + 64) + (64 * 128 * 16 + 128)  # 172,848
    norms = 2 * (16 * 28 * 38 + 32 * 13 * 18 + 64 * 5 * 8 + 128 * 1 * 3)  # weight + bias: 54,912
    proj = 128 * 1 * 3 * 32 + 32  # the whole last map, flattened, to 32: 12,320
    enc = DepthEncoder((1, 60, 80))
    assert sum(p.numel() for p in enc.parameters()) == convs + norms + proj == 240_080


def test_layernorm_over_channels_and_space():
    torch.manual_seed(0)
    enc = DepthEncoder((1, 60, 80))
    norms = [m for m in enc.modules() if isinstance(m, nn.LayerNorm)]
    assert [tuple(m.normalized_shape) for m in norms] == [(16, 28, 38), (32, 13, 18), (64, 5, 8), (128, 1, 3)]
    # The first block's output has zero mean / unit variance per sample over (C, H, W) jointly
    # (fresh affine = identity), but not per channel: the norm is not a per-channel one.
    x = enc.convs[:3](torch.rand(3, 1, 60, 80))  # (3, 16, 28, 38)
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.var(dim=(1, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert x.mean(dim=(2, 3)).abs().max() > 1e-2
    with pytest.raises(ValueError, match="built for"):
        enc(torch.rand(1, 1, 120, 160))


def test_chunked_inference_matches_and_bounds_memory():
    from dexrl.bench.capacity import torch_peak_bytes

    torch.manual_seed(0)
    whole, chunked = DepthEncoder((1, 60, 80)), DepthEncoder((1, 60, 80), chunk=2)
    chunked.load_state_dict(whole.state_dict())
    x = torch.rand(8, 1, 60, 80)
    with torch.no_grad():
        peak_whole, a = torch_peak_bytes(lambda: whole(x), torch.device("cpu"))
        peak_chunked, b = torch_peak_bytes(lambda: chunked(x), torch.device("cpu"))
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    # First conv + ReLU + LayerNorm outputs, float32: 8 images 16x28x38 = 545 KB each stage;
    # chunks of 2 hold a quarter of that at a time.
    assert peak_chunked < 0.4 * peak_whole
    # With autograd on, nothing is chunked: the backward needs every activation anyway.
    y = chunked(x)
    assert y.requires_grad and y.shape == (8, 32)


@pytest.mark.parametrize("chunk", [0, 3])
def test_compact_images_encode_like_their_decoded_metres(chunk):
    torch.manual_seed(0)
    encoder = DepthEncoder((1, 12, 16), channels=(4, 4, 4, 4), chunk=chunk)
    mm = depth_to_uint16_mm(torch.rand(8, 1, 12, 16) * 2)
    with torch.no_grad():
        assert torch.equal(encoder(mm), encoder(uint16_mm_to_depth(mm)))
        f16 = uint16_mm_to_depth(mm).half()
        assert torch.equal(encoder(f16), encoder(f16.float()))
