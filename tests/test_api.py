"""The Python API and `frcnn detect` on a real (untrained) exported detector: every input kind
gives the same detections, batches give what single images give, bad input is one line."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pipeline.api import Detector, as_rgb
from pipeline.cli.detect_images import image_paths
from pipeline.cli.main import main
from pipeline.errors import FrcnnError
from pipeline.model.faster_rcnn import PAPER_TEST_TIME, FasterRCNN
from tests.conftest import exported_detector, tiny_params

# Sizes chosen so that two pairs share a padded canvas and one image has its own.
SIZES = [(64, 80), (60, 90), (96, 64), (90, 60), (50, 100)]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    params = tiny_params()
    multi_view = {"scales": [1.0, 1.5], "flip": True, "box_vote_iou": 0.7, "refine_boxes": True}
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return exported_detector(path, params, lambda c: c["detect"].update(multi_view))


@pytest.fixture(scope="module")
def pictures():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def same(a, b, atol=1e-4):
    assert a.names == b.names and np.array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=atol)
    np.testing.assert_allclose(a.scores, b.scores, atol=atol)


def one_view_alone(detector, pixels):
    """One view of one image, through `FasterRCNN.detect` with the paper's test time."""
    model = detector.model
    one = dataclasses.replace(model.config.detect, **{**PAPER_TEST_TIME, "scales": (1.0,)})
    config = dataclasses.replace(model.config, detect=one)
    return FasterRCNN(config, model.backbone, model.rpn, model.head).detect(pixels)


def test_every_kind_of_image_gives_the_same_detections(model_path, pictures, tmp_path):
    detector = Detector.load(model_path)
    pixels = pictures[0]
    Image.fromarray(pixels).save(tmp_path / "a.png")
    kinds = [
        pixels,
        Image.fromarray(pixels),
        Image.fromarray(pixels).convert("RGBA"),
        torch.from_numpy(pixels).permute(2, 0, 1),
        torch.from_numpy(pixels).permute(2, 0, 1).float() / 255,
        tmp_path / "a.png",
        str(tmp_path / "a.png"),
    ]
    found = detector.detect(kinds)
    assert len(found[0]) > 0
    for other in found[1:]:
        same(found[0], other, atol=0)
    direct = detector.model.detect(pixels)
    np.testing.assert_array_equal(found[0].boxes, direct["boxes"].numpy())
    assert found[0].names == tuple(detector.classes[i] for i in direct["labels"].tolist())


def test_one_view_in_batches_gives_what_each_image_gives_alone(model_path, pictures):
    detector = Detector.load(model_path)
    alone = [detector.detect(p, views="one")[0] for p in pictures]
    for batch_size in (2, 5):
        for a, b in zip(alone, detector.detect(pictures, batch_size, "one"), strict=True):
            same(a, b)
    for pixels, found in zip(pictures, alone, strict=True):
        reference = one_view_alone(detector, pixels)
        assert len(found) == len(reference["scores"]) > 0
        np.testing.assert_allclose(found.boxes, reference["boxes"].numpy(), atol=1e-4)
    # The exported views are another computation: more views, voting, refinement.
    exported = detector.detect(pictures[0])[0]
    assert not (len(exported) == len(alone[0]) and np.allclose(exported.boxes, alone[0].boxes))


def test_a_score_threshold_keeps_the_stronger_detections(model_path, pictures):
    detector = Detector.load(model_path)
    found = detector.detect(pictures[0])[0]
    cut = float(np.median(found.scores))
    kept = detector.detect(pictures[0], score_thresh=cut)[0]
    assert len(kept) == int((found.scores >= cut).sum()) > 0
    assert (kept.scores >= cut).all()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), "image 0: an array of float32, expected uint8"),
        (np.zeros((8, 8, 4), np.uint8), "image 0: an array of shape [8, 8, 4], expected [H, W, 3]"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), "tensor of shape [8, 8, 3], expected [3, H, W]"),
        (torch.full((3, 8, 8), 2.0), "image 0: a float tensor with values outside [0, 1]"),
        (torch.zeros(3, 8, 8, dtype=torch.int32), "a tensor of torch.int32, expected uint8"),
        (Image.new("I;16", (8, 8)), "image 0: a PIL image of mode I;16; convert it to RGB"),
        (3, "image 0: a int, not an image path, PIL image or array"),
        ("missing.jpg", "missing.jpg: image file not found"),
    ],
)  # fmt: skip
def test_an_image_the_detector_cannot_take_is_named(image, message):
    with pytest.raises(FrcnnError, match=None) as caught:
        as_rgb(image, "image 0") if not isinstance(image, str) else as_rgb(image)
    assert message in str(caught.value)


def test_bad_call_values_are_one_line(model_path, pictures):
    detector = Detector.load(model_path)
    with pytest.raises(FrcnnError, match="batch_size is 0; allowed: an integer >= 1"):
        detector.detect(pictures, batch_size=0)
    with pytest.raises(FrcnnError, match="views is 'two'; allowed: exported | one"):
        detector.detect(pictures, views="two")
    with pytest.raises(FrcnnError, match="device 'tpu': not a device here"):
        Detector.load(model_path, device="tpu")


def test_detect_takes_folders_and_patterns_in_batches(model_path, pictures, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, pixels in enumerate(pictures):
        Image.fromarray(pixels).save(folder / ("sub" if i % 2 else "") / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    paths = image_paths([folder])
    assert [p.name for p in paths] == ["0.png", "2.png", "4.png", "1.png", "3.png"]
    assert image_paths([tmp_path / "photos" / "*.png"]) == [
        folder / n for n in ("0.png", "2.png", "4.png")
    ]

    out = tmp_path / "found.json"
    result = CliRunner().invoke(main, [
        "detect", str(folder), "--model", str(model_path), "--out", str(out), "--views", "one",
        "--batch-size", "4", "--score-thresh", "0",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())
    api = Detector.load(model_path).detect(paths, views="one")
    assert len(found) == sum(len(f) for f in api)
    first = [r for r in found if r["file_name"] == str(paths[0])]
    x1, y1, w, h = first[0]["bbox"]
    np.testing.assert_allclose([x1, y1, x1 + w, y1 + h], api[0].boxes[0], atol=0.01)


@pytest.mark.parametrize(
    ("argument", "message"),
    [("empty", "empty: a folder with no image files"), ("nothing/*.jpg", "no file matches")],
)
def test_a_folder_or_pattern_without_images_is_an_error(tmp_path, argument, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrcnnError, match=message):
        image_paths([tmp_path / argument])
