"""Test-time augmentation: the views the detector looks at, and how their boxes come back."""

import dataclasses

import numpy as np
import torch
from torchvision.ops import box_area

from pipeline.data.images import augmented_view, normalise
from pipeline.data.records import BACKGROUND_CLASS
from pipeline.model.faster_rcnn import FasterRCNN
from tests.conftest import detector_config


def test_an_augmented_view_resizes_and_mirrors_the_valid_region_only():
    pixels = np.zeros((40, 70, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # a white band on the left
    image = normalise(pixels, 40, 70, flipped=False)  # padded to 64 x 96
    same, size = augmented_view(image, (40, 70), 1.0, flipped=False)
    assert size == (40, 70) and torch.equal(same, image)
    mirrored, _ = augmented_view(image, (40, 70), 1.0, flipped=True)
    assert torch.equal(mirrored, normalise(pixels, 40, 70, flipped=True))
    larger, size = augmented_view(image, (40, 70), 1.5, flipped=True)
    assert size == (60, 105) and larger.shape == (3, 64, 128)
    white = image[:, 0, 0]
    torch.testing.assert_close(larger[:, 30, 100], white)  # the band, now on the right
    torch.testing.assert_close(larger[:, 30, 10], image[:, 0, 50])
    assert (larger[:, 60:] == 0).all() and (larger[:, :, 105:] == 0).all()


def test_with_flip_a_mirrored_image_gets_the_mirrored_detections(params):
    config = detector_config(params, (BACKGROUND_CLASS, "a", "b"))
    mirrored_too = dataclasses.replace(config.detect, scales=(1.0,), flip=True)
    config = dataclasses.replace(config, detect=mirrored_too)
    torch.manual_seed(0)
    detector = FasterRCNN.from_config(config).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    found = detector.detect(pixels)
    mirrored = detector.detect(np.ascontiguousarray(pixels[:, ::-1]))
    assert len(found["boxes"]) > 10
    # the two looks are the same two images in the other order
    for key in ("scores", "labels"):
        torch.testing.assert_close(mirrored[key], found[key])
    x1, y1, x2, y2 = found["boxes"].unbind(1)
    expected = torch.stack((160 - x2, y1, 160 - x1, y2), 1)
    torch.testing.assert_close(mirrored["boxes"], expected, rtol=0, atol=1e-3)  # pixels
    one_look = dataclasses.replace(config.detect, flip=False)
    detector.config = dataclasses.replace(config, detect=one_look)
    assert not torch.allclose(detector.detect(pixels)["scores"][:10], found["scores"][:10])


def test_an_enlarged_view_offers_boxes_up_to_the_size_asked(params):
    config = detector_config(params, (BACKGROUND_CLASS, "a", "b"))
    torch.manual_seed(0)
    detector = FasterRCNN.from_config(config).eval()
    pixels = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    scale = 288 / 120  # the resize `detect` applies

    def sides(**detect: object) -> torch.Tensor:
        detect = dataclasses.replace(config.detect, refine_boxes=False, flip=False, **detect)
        detector.config = dataclasses.replace(config, detect=detect)
        return box_area(detector.detect(pixels)["boxes"] * scale).sqrt()

    assert sides(scales=(2.0,), enlarged_max_box=None).max() > 40
    limited = sides(scales=(2.0,), enlarged_max_box=40)
    assert len(limited) > 0 and limited.max() <= 40
    assert sides(scales=(1.0,), enlarged_max_box=10).max() > 40  # the image's own size: any box


def test_an_image_left_with_no_proposal_gets_no_detection_and_no_error(params, monkeypatch):
    """Proposals under `proposals.min_size` are dropped: an image can be left with none."""
    from pipeline.model import faster_rcnn

    config = detector_config(params, (BACKGROUND_CLASS, "a", "b"))
    torch.manual_seed(0)
    detector = FasterRCNN.from_config(config).eval()
    monkeypatch.setattr(
        faster_rcnn, "view_proposals", lambda *a, **k: (torch.zeros(0, 4), torch.zeros(0))
    )
    pixels = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    found = detector.detect(pixels)
    assert found["boxes"].shape == (0, 4)
    assert len(found["scores"]) == len(found["labels"]) == 0
    side = detector.head.pool_size
    pooled = torch.zeros(0, detector.backbone.out_channels, side, side)
    logits, deltas = detector.head.classify(pooled)
    assert logits.shape == (0, 3) and deltas.shape == (0, 3, 4)
