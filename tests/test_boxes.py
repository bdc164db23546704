import math

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder

from pipeline.model.boxes import MAX_LOG_SCALE, decode, encode, inside_image

coordinate = st.floats(0, 500, allow_nan=False, allow_subnormal=False)
extent = st.floats(1, 300, allow_nan=False, allow_subnormal=False)


@settings(max_examples=100, deadline=None)
@given(coordinate, coordinate, extent, extent, coordinate, coordinate, extent, extent)
def test_decode_inverts_encode(ax, ay, aw, ah, gx, gy, gw, gh):
    # Beyond exp(MAX_LOG_SCALE) the clamp deliberately breaks the inverse.
    assume(gw / aw < 60 and gh / ah < 60)
    anchor = torch.tensor([[ax, ay, ax + aw, ay + ah]], dtype=torch.float64)
    gt = torch.tensor([[gx, gy, gx + gw, gy + gh]], dtype=torch.float64)
    stds = (0.1, 0.1, 0.2, 0.2)
    torch.testing.assert_close(decode(anchor, encode(anchor, gt, stds), stds), gt)


def test_encode_matches_the_paper_parametrisation():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    gt = torch.tensor([[5.0, 0.0, 25.0, 10.0]])
    want = torch.tensor([[(15 - 5) / 10, (5 - 10) / 20, math.log(2.0), math.log(0.5)]])
    torch.testing.assert_close(encode(anchor, gt), want)


def test_decode_clamps_huge_scale_deltas():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    box = decode(anchor, torch.tensor([[0.0, 0.0, 50.0, 50.0]]))
    assert torch.isfinite(box).all()
    width = box[0, 2] - box[0, 0]
    torch.testing.assert_close(width, torch.tensor(16 * math.exp(MAX_LOG_SCALE)))


def test_inside_image_allows_a_border():
    boxes = torch.tensor([[-2.0, 0, 10, 10], [0, 0, 64, 64], [0, 0, 65, 10]])
    assert inside_image(boxes, 64, 64).tolist() == [False, True, False]
    assert inside_image(boxes, 64, 64, border=2).tolist() == [True, True, True]


def test_box_coding_agrees_with_torchvision_box_coder():
    generator = torch.Generator().manual_seed(0)
    corner = torch.rand(500, 2, generator=generator) * 400
    reference = torch.cat((corner, corner + 4 + torch.rand(500, 2, generator=generator) * 200), 1)
    corner = torch.rand(500, 2, generator=generator) * 400
    target = torch.cat((corner, corner + 4 + torch.rand(500, 2, generator=generator) * 200), 1)
    stds = (0.1, 0.1, 0.2, 0.2)
    coder = BoxCoder(weights=tuple(1 / s for s in stds))  # (10, 10, 5, 5)
    theirs = coder.encode_single(target, reference)
    torch.testing.assert_close(encode(reference, target, stds), theirs, rtol=1e-5, atol=1e-5)
    deltas = torch.randn(500, 4, generator=generator)
    torch.testing.assert_close(
        decode(reference, deltas, stds),
        coder.decode_single(deltas, reference),
        rtol=1e-5,
        atol=1e-3,
    )
