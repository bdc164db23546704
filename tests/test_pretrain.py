"""The `pretrain` stage and its crops: object crops frame their object, background crops miss
every object, the classifier learns, and given weights are used as they are."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from bench.peer import peer_backbone
from bench.project import inside
from pipeline import layout
from pipeline.artifacts.model_files import load_model
from pipeline.artifacts.reads import StageInputs
from pipeline.model.backbones import build_backbone
from pipeline.model.crops import background_boxes, crop_images, jitter_boxes, zoom_out_boxes
from pipeline.training.backbone_features import initial_backbone
from pipeline.training.train_and_save import seeded_init
from tests.conftest import stage_function, tiny_params, vgg16_weights_file


@settings(max_examples=50, deadline=None)
@given(
    st.integers(32, 300),
    st.integers(32, 300),
    st.lists(st.tuples(st.floats(0, 0.8), st.floats(0, 0.8), st.floats(0.05, 0.2)), max_size=5),
    st.integers(0, 2**31),
)
def test_background_boxes_lie_inside_and_miss_every_object(height, width, objects, seed):
    gt = torch.tensor(
        [[x * width, y * height, (x + s) * width, (y + s) * height] for x, y, s in objects]
    ).reshape(-1, 4)
    boxes = background_boxes((height, width), gt, 6, 0.3, 16, torch.Generator().manual_seed(seed))
    assert len(boxes) <= 6
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width + 1e-3).all() and (boxes[:, 3] <= height + 1e-3).all()
    assert ((boxes[:, 2:] - boxes[:, :2]) > 0).all()
    if len(gt) and len(boxes):
        assert (box_iou(boxes, gt) < 0.3).all()


def test_an_empty_image_gets_all_its_background_crops():
    boxes = background_boxes((100, 120), torch.zeros(0, 4), 5, 0.3, 16, torch.Generator())
    assert len(boxes) == 5


def test_jittered_boxes_stay_close_to_their_object():
    box = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    jittered = jitter_boxes(box.expand(200, 4), 0.1, torch.Generator().manual_seed(0))
    assert not torch.equal(jittered, box.expand(200, 4))
    assert (box_iou(jittered, box) > 0.6).all()
    assert torch.equal(jitter_boxes(box, 0.0, torch.Generator()), box)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 300), st.floats(0, 300), st.floats(1, 200), st.floats(1, 200)),
             min_size=1, max_size=8),
    st.floats(1, 8),
    st.integers(0, 2**31),
)  # fmt: skip
def test_zoomed_out_boxes_hold_their_object_at_its_centre(objects, max_factor, seed):
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in objects])
    zoomed = zoom_out_boxes(boxes, max_factor, torch.Generator().manual_seed(seed))
    size, zoomed_size = boxes[:, 2:] - boxes[:, :2], zoomed[:, 2:] - zoomed[:, :2]
    factor = zoomed_size / size
    assert torch.allclose(factor[:, 0], factor[:, 1], rtol=1e-4)  # the aspect ratio is kept
    assert (factor >= 1 - 1e-4).all() and (factor <= max_factor * (1 + 1e-4)).all()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert torch.allclose((zoomed[:, :2] + zoomed[:, 2:]) / 2, centre, atol=1e-3)


def test_zoom_out_factors_spread_over_their_range():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).expand(2000, 4)
    zoomed = zoom_out_boxes(box, 4.0, torch.Generator().manual_seed(0))
    factor = ((zoomed[:, 2] - zoomed[:, 0]) / 10).sort().values
    # log-uniform in [1, 4]: the median is 2, a quarter of the draws fall below sqrt(2)
    assert abs(factor[1000].item() - 2.0) < 0.1
    assert abs(factor[500].item() - 2**0.5) < 0.1
    assert factor[0] >= 1 and factor[-1] <= 4


def test_crops_resample_the_box_region():
    image = torch.zeros(1, 3, 64, 80)
    image[:, :, 16:48, 20:60] = 1.0  # a bright 40 x 32 block
    crops = crop_images(image, [torch.tensor([[20.0, 16.0, 60.0, 48.0], [0, 0, 16, 16]])], 32)
    assert crops.shape == (2, 3, 32, 32)
    # Bilinear samples on the block's edge mix in the dark around it; inside it is all block.
    assert torch.allclose(crops[0, :, 1:-1, 1:-1], torch.ones(3, 30, 30))
    assert torch.allclose(crops[1], torch.zeros(3, 32, 32))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    with inside(root):
        for stage in (layout.GENERATE, layout.PREPARE):
            stage_function(stage.name)(tiny_params())
    return root


@pytest.mark.slow
def test_pretraining_learns_to_classify_crops_and_steps_1_and_2_start_from_it(prepared):
    """Also at another stride than the steps': the weights are the same at both."""
    p = tiny_params()
    schedule = dataclasses.replace(p.train.pretrain, iterations=100, lr=0.02, lr_steps=())
    p = dataclasses.replace(
        p,
        train=dataclasses.replace(p.train, pretrain=schedule),
        pretrain=dataclasses.replace(p.pretrain, stride=16),  # the steps then use it at 8
        anchors=dataclasses.replace(p.anchors, stride=8),
    )
    with inside(prepared):
        last = stage_function("pretrain")(p)
        history = [
            row["loss/crop_classification"] for row in _history(layout.live_log(layout.PRETRAIN))
        ]
        saved = load_model(layout.PRETRAIN.out, "pretrain")
        inputs = StageInputs(layout.STEP1_RPN, p)
        backbone = initial_backbone(inputs)
        fingerprint = inputs.fingerprints[layout.PRETRAIN.name]
    assert set(saved["parts"]) == {"backbone", "classifier"}
    assert saved["parts"]["classifier"]["weight"].shape[0] == 7  # six shapes and background
    assert sum(history[-5:]) / 5 < 0.7 * sum(history[:5]) / 5, history
    assert last["loss/crop_classification"] == history[-1]
    assert fingerprint == saved["fingerprint"]
    assert backbone.stride == 8
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, saved["parts"]["backbone"][key]), key


def test_the_random_peer_starts_from_the_weights_pretraining_starts_from():
    p = tiny_params()
    seeded_init(p, layout.PRETRAIN)
    start = build_backbone(p.backbone, p.pretrain.stride).state_dict()
    torch.manual_seed(12345)  # the peer seeds its backbone itself
    peer = peer_backbone(p, "random")
    assert peer.stride == p.anchors.stride
    assert peer.state_dict().keys() == start.keys()
    for key, value in peer.state_dict().items():
        assert torch.equal(value, start[key]), key


def _history(live):
    import csv

    path = live / "plots" / "metrics" / "loss" / "crop_classification.tsv"
    with path.open() as rows:
        return [{"loss/crop_classification": float(r["crop_classification"])} for r in
                csv.DictReader(rows, delimiter="\t")]  # fmt: skip


@pytest.mark.slow
def test_given_weights_are_the_start_and_nothing_trains(tmp_path):
    path = tmp_path / "vgg16.pth"
    state = vgg16_weights_file(path)
    p = tiny_params()
    backbone = dataclasses.replace(p.backbone, name="vgg16", weights=str(path))
    p = dataclasses.replace(p, backbone=backbone)
    with inside(tmp_path):  # its declared input is there, as `dvc repro` makes it
        for stage in (layout.GENERATE, layout.PREPARE):
            stage_function(stage.name)(p)
        assert stage_function("pretrain")(p) == {"weights": str(path)}
        assert not layout.live_log(layout.PRETRAIN).exists()  # nothing trained
        saved = load_model(layout.PRETRAIN.out, "pretrain")
    assert set(saved["parts"]) == {"backbone"}
    assert torch.equal(
        saved["parts"]["backbone"]["body.conv1_1.weight"], state["features.0.weight"]
    )
