"""The prepare stage's pieces and the artifact it writes from VOC, COCO and synthetic data."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.store import open_artifact
from pipeline.config import AugmentParams, Params, StoreParams
from pipeline.data.catalog import check_declared_size, fit_boxes
from pipeline.data.images import canvas_shape, resize_scale, resized_shape
from pipeline.data.records import make_record
from pipeline.data.synthetic import generate_synthetic
from pipeline.errors import DatasetError, ParamError
from stages.anchor_targets import label_anchors
from stages.prepare import prepare_dataset
from tests.conftest import TinyImage, tiny_images, with_data, write_coco, write_voc

STORE = StoreParams(shard_size=4, feature_dtype="float32")


def stored(params: Params, **sections: Any) -> Params:
    """`params` with the tests' small shards (and `sections` replaced)."""
    return dataclasses.replace(params, store=STORE, **sections)


def test_resize_scale_follows_min_then_max_size():
    assert resize_scale(375, 500, 600, 1000) == 600 / 375
    assert resize_scale(200, 1000, 600, 1000) == 1.0  # 3000 px long side would pass the cap
    assert resized_shape(375, 500, 1.6) == (600, 800)


def test_canvas_holds_every_image_and_is_padded_to_32():
    assert canvas_shape([(600, 800), (610, 700)]) == (640, 800)


def test_fit_boxes_clips_and_refuses_boxes_outside_the_image():
    boxes = np.array([[-5, 2, 10, 10], [1, 1, 5, 5]], np.float32)
    fitted, changed = fit_boxes(boxes, 50, 50, "a.xml")
    assert changed == 1
    np.testing.assert_array_equal(fitted[0], [0, 2, 10, 10])
    outside = np.array([[1, 1, 5, 5], [60, 60, 70, 70]], np.float32)
    with pytest.raises(DatasetError, match=r"a.xml: object 2 box \[60.0, 60.0, 70.0, 70.0\] lies "
                       "outside the 50x50 image"):  # fmt: skip
        fit_boxes(outside, 50, 50, "a.xml")


def test_a_stated_image_size_must_be_the_displayed_one():
    def record(declared):
        return make_record("a", Path("a.jpg"), [], "a.xml", declared)

    check_declared_size(record((40, 60)), (40, 60))
    check_declared_size(record(None), (40, 60))  # COCO files may leave the size out
    with pytest.raises(DatasetError, match="a.xml: states a 50x40 image but a.jpg is 60x40"):
        check_declared_size(record((40, 50)), (40, 60))
    with pytest.raises(DatasetError, match="swapped: annotated before the image's EXIF rotation"):
        check_declared_size(record((60, 40)), (40, 60))


def voc_params(params, root, **changes):
    data = dict(source="voc", root=str(root), classes=("cat", "dog"), min_size=64, max_size=96)
    data.update(changes)
    return with_data(params, **data)


def test_prepare_writes_resized_images_and_boxes(tmp_path, params):
    images = tiny_images(count=7)
    root = write_voc(tmp_path / "voc", {"trainval": images[:5], "test": images[5:]})
    p = voc_params(params, root)
    counts = prepare_dataset(stored(p), tmp_path / "prepared.zarr")
    prepared = PreparedDataset(tmp_path / "prepared.zarr")

    assert counts["train_images"] == 5 and counts["test_images"] == 2
    assert prepared.split.tolist() == [0] * 5 + [1] * 2
    assert prepared.classes == ["__background__", "cat", "dog"]
    assert prepared.canvas[0] % 32 == 0 and prepared.canvas[1] % 32 == 0
    assert prepared.images.shards[0] == 4
    for i, image in enumerate(images):
        h, w = prepared.image_sizes[i]
        scale = resize_scale(image.height, image.width, 64, 96)
        assert (h, w) == resized_shape(image.height, image.width, scale)
        want = np.array([o[1] for o in image.objects], np.float32).reshape(-1, 4) * scale
        np.testing.assert_allclose(prepared.boxes(i).numpy(), want, rtol=1e-6)
        pixels = prepared.images[i]
        assert pixels[:h, :w].any() and not pixels[h:].any() and not pixels[:, w:].any()


def test_prepare_from_coco_matches_prepare_from_voc(tmp_path, params):
    images = tiny_images(count=6)
    split = {"trainval": images[:4], "test": images[4:]}
    voc = write_voc(tmp_path / "voc", split)
    coco = write_coco(tmp_path / "coco", split, ("cat", "dog"))
    prepare_dataset(stored(voc_params(params, voc)), tmp_path / "a.zarr")
    prepare_dataset(
        stored(voc_params(params, coco, source="coco", classes=None)), tmp_path / "b.zarr"
    )
    a, b = PreparedDataset(tmp_path / "a.zarr"), PreparedDataset(tmp_path / "b.zarr")
    assert a.classes == b.classes
    np.testing.assert_array_equal(a.images[...], b.images[...])
    for i in range(len(images)):
        np.testing.assert_array_equal(a.boxes(i).numpy(), b.boxes(i).numpy())
        np.testing.assert_array_equal(a.labels(i).numpy(), b.labels(i).numpy())
        np.testing.assert_array_equal(a.difficult(i).numpy(), b.difficult(i).numpy())


def test_boxes_partly_outside_the_image_are_clipped_and_counted(tmp_path, params):
    image = TinyImage(
        "a", 50, 60, [("cat", [-4, 2, 30, 30], False), ("dog", [40, 10, 70, 20], False)]
    )
    root = write_voc(tmp_path / "voc", {"trainval": [image], "test": [TinyImage("b", 50, 50)]})
    counts = prepare_dataset(stored(voc_params(params, root)), tmp_path / "p.zarr")
    assert (counts["boxes_clipped"], counts["boxes"]) == (2, 2)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "a.jpg: unreadable image"),
        (lambda p: p.write_text("not an image"), "a.jpg: unreadable image"),
        (lambda p: p.unlink(), "a.jpg: image file not found"),
    ],
)
def test_bad_images_stop_prepare_without_a_complete_artifact(tmp_path, params, damage, message):
    root = write_voc(
        tmp_path / "voc",
        {
            "trainval": [TinyImage("a", 50, 50, [("cat", [2, 2, 20, 20], False)])],
            "test": [TinyImage("b", 50, 50)],
        },
    )
    damage(root / "JPEGImages" / "a.jpg")
    with pytest.raises(DatasetError, match=message):
        prepare_dataset(stored(voc_params(params, root)), tmp_path / "p.zarr")
    assert not (tmp_path / "p.zarr").exists()


def test_an_id_in_both_splits_is_refused(tmp_path, params):
    image = TinyImage("a", 50, 50)
    root = write_voc(tmp_path / "voc", {"trainval": [image], "test": [image]})
    with pytest.raises(DatasetError, match=r"test.txt: image id 'a' is also listed in .*trainval"):
        prepare_dataset(stored(voc_params(params, root)), tmp_path / "p.zarr")


def tiny_synthetic(params):
    return dataclasses.replace(
        params.synthetic, num_trainval=4, num_test=2, min_side=64, max_side=96, min_object=8
    )


def test_synthetic_dataset_is_deterministic_and_reads_as_voc(tmp_path, params):
    synthetic = tiny_synthetic(params)
    counts = generate_synthetic(tmp_path / "a", synthetic)
    generate_synthetic(tmp_path / "b", synthetic)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 2 * 6 + 2
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    p = with_data(params, source="synthetic", root=str(tmp_path / "a"), min_size=64, max_size=96)
    prepared_counts = prepare_dataset(stored(p), tmp_path / "p.zarr")
    assert prepared_counts["boxes"] == counts["objects"]
    assert prepared_counts["boxes_clipped"] == 0


def test_synthetic_objects_cover_sizes_classes_and_difficulty(tmp_path, params):
    synthetic = dataclasses.replace(params.synthetic, num_trainval=40, num_test=1)
    generate_synthetic(tmp_path / "s", synthetic)
    p = with_data(params, source="synthetic", root=str(tmp_path / "s"))
    prepare_dataset(stored(p), tmp_path / "p.zarr")
    prepared = PreparedDataset(tmp_path / "p.zarr")
    boxes = np.concatenate([prepared.boxes(i).numpy() for i in range(len(prepared))])
    labels = np.concatenate([prepared.labels(i).numpy() for i in range(len(prepared))])
    difficult = np.concatenate([prepared.difficult(i).numpy() for i in range(len(prepared))])
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert sides.min() < 24 and sides.max() > 150
    assert set(labels.tolist()) == {1, 2, 3, 4, 5, 6}
    assert 0 < difficult.mean() < 0.3


def test_anchor_target_artifact_matches_the_prepared_images(tmp_path, params):
    images = tiny_images(count=5)
    root = write_voc(tmp_path / "voc", {"trainval": images[:3], "test": images[3:]})
    prepare_dataset(stored(voc_params(params, root)), tmp_path / "p.zarr")
    prepared = PreparedDataset(tmp_path / "p.zarr")
    anchors = dataclasses.replace(params.anchors, scales=(1.0, 2.0))
    counts = label_anchors(
        stored(params, anchors=anchors, augment=AugmentParams(flip=False)),
        prepared,
        tmp_path / "t.zarr",
    )
    group = open_artifact(
        tmp_path / "t.zarr", "anchor_targets", expect={"inputs.prepare": prepared.fingerprint}
    )
    stride = anchors.stride
    grid = (prepared.canvas[0] // stride, prepared.canvas[1] // stride, 6)
    assert group["labels"].shape == (5, *grid)
    assert group["anchors"].shape == (*grid, 4)
    labels = group["labels"][...]
    assert counts["foreground"] == int((labels == 1).sum()) > 0
    assert counts["ignore"] + counts["background"] + counts["foreground"] == labels.size
    train_boxes = sum(len(prepared.boxes(i)) for i in range(3))
    assert counts["gt_boxes"] == train_boxes
    assert 0 <= counts["gt_without_anchor"] <= counts["gt_below_fg_iou"] <= train_boxes
    for i in range(5):
        fg = labels[i] == 1
        assert fg.any() == bool(len(prepared.boxes(i)))
        assert np.abs(group["deltas"][i][~fg]).sum() == 0


def test_anchors_that_are_never_background_are_refused(tmp_path, params):
    # One object fills the 64 px image; each 48 px anchor inside it covers more than bg_iou.
    image = TinyImage("a", 64, 64, [("cat", [0, 0, 64, 64], False)])
    root = write_voc(
        tmp_path / "voc", {"trainval": [image], "test": [dataclasses.replace(image, image_id="b")]}
    )
    prepare_dataset(stored(voc_params(params, root)), tmp_path / "p.zarr")
    anchors = dataclasses.replace(params.anchors, stride=16, scales=(3.0,))
    with pytest.raises(ParamError, match=r"'anchors.scales' is \[3.0\]: no anchor is background"):
        label_anchors(
            stored(params, anchors=anchors, augment=AugmentParams(flip=False)),
            PreparedDataset(tmp_path / "p.zarr"),
            tmp_path / "t.zarr",
        )
    assert not (tmp_path / "t.zarr").exists()
