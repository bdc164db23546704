"""VOC and COCO readers: the same dataset reads the same both ways; bad files are named."""

import json

import numpy as np
import pytest

from pipeline.data.coco import coco_classes, read_coco_split
from pipeline.data.voc import read_voc_split
from pipeline.errors import DatasetError
from tests.conftest import TinyImage, tiny_images, voc_xml, write_coco, write_voc

CLASSES = ("cat", "dog")


def splits():
    images = tiny_images(count=8)
    return {"trainval": images[:5], "test": images[5:]}


def test_voc_and_coco_readers_agree(tmp_path):
    voc = write_voc(tmp_path / "voc", splits())
    coco = write_coco(tmp_path / "coco", splits(), CLASSES)
    assert coco_classes(coco / "annotations" / "trainval.json") == CLASSES
    for split, images in splits().items():
        from_voc = read_voc_split(voc, split, CLASSES)
        from_coco = read_coco_split(coco, coco / "annotations" / f"{split}.json", "images", CLASSES)
        assert len(from_voc) == len(from_coco) == len(images)
        for a, b, image in zip(from_voc, from_coco, images, strict=True):
            assert a.path.name == b.path.name == f"{image.image_id}.jpg"
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_array_equal(a.difficult, b.difficult)
            want = np.array([o[1] for o in image.objects], np.float32).reshape(-1, 4)
            np.testing.assert_array_equal(a.boxes, want)


def voc_with(tmp_path, xml: str) -> tuple:
    root = write_voc(tmp_path / "voc", {"trainval": [TinyImage("a", 50, 50)]})
    (root / "Annotations" / "a.xml").write_text(xml)
    return root


BOX = "<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>"
SIZE = "<size><width>50</width><height>50</height></size>"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<annotation><size>", r"a.xml: malformed XML \(no element found"),
        ("<annotation></annotation>", "a.xml: no <size> element"),
        (f"<annotation>{SIZE}<object><name>cat</name></object></annotation>",
         "a.xml: object 1: no <bndbox>"),
        (f"<annotation>{SIZE}<object><name>dgo</name>{BOX.format(1, 1, 9, 9)}</object>"
         "</annotation>", "a.xml: object 1: unknown class 'dgo' \\(known: cat, dog\\)"),
        (f"<annotation>{SIZE}<object><name>cat</name>{BOX.format('x', 1, 9, 9)}</object>"
         "</annotation>", "a.xml: object 1: <xmin> is 'x', not a number"),
        (f"<annotation>{SIZE}<object><name>cat</name>{BOX.format(1, 'nan', 9, 9)}</object>"
         "</annotation>", "a.xml: object 1: <ymin> is 'nan', not a finite number"),
        (f"<annotation>{SIZE}<object><name>cat</name>{BOX.format(9, 1, 3, 9)}</object>"
         "</annotation>", "a.xml: object 1: empty box, xmin 9 xmax 3"),
        ("<annotation><size><width>50</width></size></annotation>",
         "a.xml: <size><height> is None, not a number"),
        ("<annotation><size><width>50.5</width><height>50</height></size></annotation>",
         "a.xml: <size><width> is '50.5', not a positive whole number of pixels"),
        *((f"<annotation>{SIZE}<object><name>cat</name><difficult>{flag}</difficult>"
           f"{BOX.format(1, 1, 9, 9)}</object></annotation>",
           f"a.xml: object 1: <difficult> is '{flag}', not 0 or 1") for flag in ("true", "2")),
    ],
)  # fmt: skip
def test_bad_voc_annotations_are_named(tmp_path, xml, message):
    root = voc_with(tmp_path, xml)
    with pytest.raises(DatasetError, match=message):
        read_voc_split(root, "trainval", CLASSES)


def test_missing_voc_files(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder .*nowhere does not exist"):
        read_voc_split(tmp_path / "nowhere", "trainval", CLASSES)
    root = write_voc(tmp_path / "voc", {"trainval": [TinyImage("a", 50, 50)]})
    with pytest.raises(DatasetError, match=r"ImageSets/Main/test.txt: split file not found"):
        read_voc_split(root, "test", CLASSES)
    (root / "ImageSets" / "Main" / "empty.txt").write_text("\n")
    with pytest.raises(DatasetError, match="empty.txt: empty split"):
        read_voc_split(root, "empty", CLASSES)
    (root / "Annotations" / "a.xml").unlink()
    with pytest.raises(DatasetError, match="Annotations/a.xml: annotation file not found"):
        read_voc_split(root, "trainval", CLASSES)


def test_voc_ids_cannot_reach_outside_the_dataset(tmp_path):
    root = write_voc(tmp_path / "voc", {"trainval": [TinyImage("a", 50, 50)]})
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("../../etc/passwd\n")
    with pytest.raises(DatasetError, match="escapes the folder"):
        read_voc_split(root, "trainval", CLASSES)


def coco_with(tmp_path, change) -> tuple:
    root = write_coco(tmp_path / "coco", splits(), CLASSES)
    path = root / "annotations" / "trainval.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return root, path


def _set(path: list, value):
    def change(document):
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(["images", 1, "id"], 1), "trainval.json: duplicate image id 1"),
        (_set(["annotations", 0, "image_id"], 999), "image_id 999 is not in 'images'"),
        (_set(["annotations", 0, "category_id"], 7), "category_id 7 is unknown"),
        (_set(["annotations", 0, "bbox"], [1, 2, 0, 5]), r"x2 \(1\) <= x1 \(1\)"),
        (_set(["annotations", 0, "bbox"], [1, 2, "a", 5]), r"bbox\[2\] is 'a', not a number"),
        (_set(["images", 0, "file_name"], "../../secret.jpg"), "escapes the folder"),
        (_set(["images", 0, "width"], 0), r"images\[0\]: width is 0, not a positive whole"),
        (_set(["images", 0, "height"], "tall"), r"images\[0\]: height is 'tall', not a number"),
        (_set(["images", 0, "file_name"], "/etc/passwd"), "escapes the folder"),
        (_set(["images"], []), "empty split, no images listed"),
        (_set(["categories", 0, "name"], "cow"), "unknown category 'cow'"),
        (_set(["annotations", 0, "iscrowd"], "0"), "'iscrowd' is '0', not 0 or 1"),
        (_set(["annotations", 0, "bbox"], [1, 2, "3", 5]), r"bbox\[2\] is '3', not a number"),
        (_set(["annotations", 0, "bbox"], [1, True, 3, 5]), r"bbox\[1\] is True, not a number"),
        (_set(["annotations", 0, "iscrowd"], 2), "'iscrowd' is 2, not 0 or 1"),
    ],
)
def test_bad_coco_annotations_are_named(tmp_path, change, message):
    root, path = coco_with(tmp_path, change)
    with pytest.raises(DatasetError, match=message):
        read_coco_split(root, path, "images", CLASSES)


def test_malformed_coco_json(tmp_path):
    root = write_coco(tmp_path / "coco", splits(), CLASSES)
    path = root / "annotations" / "trainval.json"
    path.write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"trainval.json: malformed JSON \(line 1"):
        read_coco_split(root, path, "images", CLASSES)


def test_voc_xml_helper_round_trips_boxes():
    image = TinyImage("x", 40, 40, [("dog", [0, 0, 40, 40], True)])
    assert "<xmin>1</xmin>" in voc_xml(image)
    assert "<xmax>40</xmax>" in voc_xml(image)


def test_two_coco_categories_of_one_name_need_data_classes_to_merge(tmp_path):
    """With `data.classes: null` the class list comes from the categories: a repeated name
    would give a class no object is ever labelled with."""
    root, path = coco_with(tmp_path, _set(["categories", 1, "name"], "cat"))
    with pytest.raises(DatasetError, match=r"categories 1 and 2 are both named 'cat'"):
        coco_classes(path)
    records = read_coco_split(root, path, "images", ("cat",))  # data.classes merges them
    assert all(label == 1 for r in records for label in r.labels)


def test_a_split_file_with_a_byte_order_mark_reads_its_first_id(tmp_path):
    root = write_voc(tmp_path / "voc", {"trainval": [TinyImage("a", 50, 50)]})
    split = root / "ImageSets" / "Main" / "trainval.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())
    assert [r.image_id for r in read_voc_split(root, "trainval", CLASSES)] == ["a"]


def test_a_number_too_long_for_python_is_one_line(tmp_path):
    root = write_coco(tmp_path / "coco", splits(), CLASSES)
    path = root / "annotations" / "trainval.json"
    path.write_text('{"images": [], "x": ' + "9" * 5000 + "}")
    with pytest.raises(DatasetError, match=r"trainval.json: unreadable JSON"):
        read_coco_split(root, path, "images", CLASSES)
