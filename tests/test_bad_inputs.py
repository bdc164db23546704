"""The bad-input catalogue: each broken input makes its stage exit non-zero with one clear line
on stderr naming the file, key or value, no traceback, and no artifact left as if complete."""

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from bench.project import inside
from pipeline import layout
from pipeline.config import parse_params
from tests.conftest import (
    TINY,
    TinyImage,
    raw_params,
    stage_function,
    with_changes,
    write_coco,
    write_voc,
)

pytestmark = pytest.mark.slow

IMAGES = {
    "trainval": [TinyImage("a", 48, 64, [("cat", [4, 4, 30, 40], False)])],
    "test": [TinyImage("b", 56, 40, [("dog", [2, 3, 20, 30], False)])],
}
BOX = "<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>"
SIZE = "<size><width>64</width><height>48</height></size>"


@dataclass(frozen=True)
class Case:
    name: str
    damage: Callable[[Path], None]
    message: str
    stage: str = "prepare"
    out: Path = layout.PREPARE.out


def params_of(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())


def set_params(root: Path, changes: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(with_changes(params_of(root), changes)))


def annotation(root: Path, body: str) -> None:
    (root / "voc" / "Annotations" / "a.xml").write_text(f"<annotation>{body}</annotation>")


def an_object(box: tuple, name: str = "cat") -> str:
    return f"{SIZE}<object><name>{name}</name>{BOX.format(*box)}</object>"


def use_coco(root: Path, change: Callable[[dict], None]) -> None:
    write_coco(root / "coco", IMAGES, ("cat", "dog"))
    path = root / "coco" / "annotations" / "trainval.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    set_params(root, {"data": {"source": "coco", "root": "coco"}})


def prepared_project(root: Path) -> None:
    """Run the data stages for real, so that a training stage gets as far as its own inputs."""
    with inside(root):
        params = parse_params(params_of(root))
        for stage in ("prepare", "anchor_targets", "pretrain"):
            stage_function(stage)(params)


def with_prepared(changes: dict) -> Callable[[Path], None]:
    """Run `prepare` for real, then change params, so that `anchor_targets` meets them."""

    def apply(root: Path) -> None:
        with inside(root):
            stage_function("prepare")(parse_params(params_of(root)))
        set_params(root, changes)

    return apply


def with_trained_rpn(changes: dict) -> Callable[[Path], None]:
    """Train step 1's RPN for real, then change params, so that `step1_proposals` meets them."""

    def apply(root: Path) -> None:
        prepared_project(root)
        with inside(root):
            stage_function("step1_rpn")(parse_params(params_of(root)))
        set_params(root, changes)

    return apply


def vgg_weights(root: Path, state: object) -> None:
    torch.save(state, root / "weights.pth")
    with_prepared({"backbone": {"name": "vgg16", "weights": "weights.pth"}})(root)


def corrupt_checkpoint(root: Path) -> None:
    prepared_project(root)
    work = root / "data" / "step1" / "rpn.pt.partial"
    work.mkdir(parents=True)
    (work / "checkpoint.pt").write_bytes(b"PK\x03\x04 this is no checkpoint")


def damaged_input(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """Build the data stages, then damage one shard file of the anchor targets."""

    def apply(root: Path) -> None:
        prepared_project(root)
        damage(root / "data" / "anchor_targets.zarr")

    return apply


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[20:24] = bytes(b ^ 0xFF for b in data[20:24])
    path.write_bytes(bytes(data))


def link_outside(relative: str) -> Callable[[Path], None]:
    """Move a dataset file or folder out of the dataset and leave a symlink in its place."""

    def damage(root: Path) -> None:
        inside_path = root / "voc" / relative
        outside = root / "elsewhere" / relative
        outside.parent.mkdir(parents=True, exist_ok=True)
        inside_path.rename(outside)
        inside_path.symlink_to(outside.resolve())

    return damage


def occupy(path: str) -> Callable[[Path], None]:
    """Put a file where the stage needs a folder: the output cannot be written."""

    def damage(root: Path) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("in the way")

    return damage


def images(name: str) -> Path:
    return Path("voc") / "JPEGImages" / name


CASES = [
    Case("missing dataset root", lambda r: set_params(r, {"data": {"root": "nowhere"}}),
         "data.root: dataset folder nowhere does not exist"),
    Case("empty trainval list", lambda r: (r / "voc/ImageSets/Main/trainval.txt").write_text(""),
         "voc/ImageSets/Main/trainval.txt: empty split"),
    Case("image listed but missing", lambda r: (r / images("a.jpg")).unlink(),
         "voc/JPEGImages/a.jpg: image file not found"),
    Case("truncated JPEG",
         lambda r: (r / images("a.jpg")).write_bytes((r / images("a.jpg")).read_bytes()[:300]),
         "voc/JPEGImages/a.jpg: unreadable image"),
    Case("non-image named .jpg", lambda r: (r / images("a.jpg")).write_text("hello"),
         "voc/JPEGImages/a.jpg: unreadable image"),
    Case("XML not well-formed", lambda r: annotation(r, "<size>"),
         "voc/Annotations/a.xml: malformed XML"),
    Case("no object in the whole train split", lambda r: annotation(r, SIZE),
         "data.root: no object of the classes ['cat', 'dog'] in the train split 'trainval'"),
    Case("XML without <size>", lambda r: annotation(r, "<object/>"),
         "voc/Annotations/a.xml: no <size> element"),
    Case("XML <size> of another image",
         lambda r: annotation(r, an_object((4, 4, 30, 40)).replace("<width>64", "<width>640")),
         "voc/Annotations/a.xml: states a 640x48 image but voc/JPEGImages/a.jpg is 64x48"),
    Case("XML <size> not a number",
         lambda r: annotation(r, an_object((4, 4, 30, 40)).replace("<height>48", "<height>x")),
         "voc/Annotations/a.xml: <size><height> is 'x', not a number"),
    Case("XML object without <bndbox>",
         lambda r: annotation(r, f"{SIZE}<object><name>cat</name></object>"),
         "voc/Annotations/a.xml: object 1: no <bndbox>"),
    Case("unknown class name", lambda r: annotation(r, an_object((1, 1, 9, 9), "dgo")),
         "voc/Annotations/a.xml: object 1: unknown class 'dgo' (known: cat, dog)"),
    Case("non-numeric coordinate", lambda r: annotation(r, an_object(("abc", 1, 9, 9))),
         "voc/Annotations/a.xml: object 1: <xmin> is 'abc', not a number"),
    Case("x2 <= x1", lambda r: annotation(r, an_object((20, 1, 10, 9))),
         "voc/Annotations/a.xml: object 1: empty box, xmin 20 xmax 10"),
    Case("NaN coordinate", lambda r: annotation(r, an_object((1, 1, "nan", 9))),
         "voc/Annotations/a.xml: object 1: <xmax> is 'nan', not a finite number"),
    Case("coordinate beyond float32", lambda r: annotation(r, an_object((1, 1, "1e39", 9))),
         "voc/Annotations/a.xml: object 1: <xmax> is '1e39', beyond any image (1e+09 px)"),
    Case("box fully outside the image", lambda r: annotation(r, an_object((80, 60, 90, 70))),
         "voc/Annotations/a.xml: object 1 box [79.0, 59.0, 90.0, 70.0] lies outside the 64x48"),
    Case("COCO duplicate image ids",
         lambda r: use_coco(r, lambda d: d["images"].append(dict(d["images"][0]))),
         "coco/annotations/trainval.json: duplicate image id 1"),
    Case("COCO annotation of a missing image",
         lambda r: use_coco(r, lambda d: d["annotations"][0].update(image_id=42)),
         "coco/annotations/trainval.json: annotation 1: image_id 42 is not in 'images'"),
    Case("COCO image size of another image",
         lambda r: use_coco(r, lambda d: d["images"][0].update(width=65)),
         "coco/annotations/trainval.json: image 1: states a 65x48 image but"),
    Case("COCO file_name with ..",
         lambda r: use_coco(r, lambda d: d["images"][0].update(file_name="../../etc/passwd")),
         "'../../etc/passwd' escapes the folder coco/images"),
    Case("COCO absolute file_name",
         lambda r: use_coco(r, lambda d: d["images"][0].update(file_name="/etc/passwd")),
         "'/etc/passwd' escapes the folder coco/images"),
    Case("COCO image without file_name",
         lambda r: use_coco(r, lambda d: d["images"][0].pop("file_name")),
         "coco/annotations/trainval.json: images[0]: no 'file_name'"),
    Case("COCO file_name that is a number",
         lambda r: use_coco(r, lambda d: d["images"][0].update(file_name=7)),
         "coco/annotations/trainval.json: images[0]: 'file_name' is 7, not a string"),
    Case("COCO annotations that are not a list",
         lambda r: use_coco(r, lambda d: d.update(annotations={"id": 1})),
         "coco/annotations/trainval.json: 'annotations' is {'id': 1}, not a list"),
    Case("COCO annotation that is not an object",
         lambda r: use_coco(r, lambda d: d["annotations"].append(3)),
         "coco/annotations/trainval.json: annotations[1] is 3, not an object"),
    Case("COCO JSON nested absurdly deep",
         lambda r: (use_coco(r, lambda d: None),
                    (r / "coco/annotations/trainval.json").write_text("[" * 200000)),
         "coco/annotations/trainval.json: nested too deeply"),
    Case("COCO JSON that is not UTF-8",
         lambda r: (use_coco(r, lambda d: None),
                    (r / "coco/annotations/trainval.json").write_bytes(b'{"images": "\xff"}')),
         "coco/annotations/trainval.json: not UTF-8 text"),
    Case("split list that is not UTF-8",
         lambda r: (r / "voc/ImageSets/Main/trainval.txt").write_bytes(b"a\n\xff\xfe\n"),
         "voc/ImageSets/Main/trainval.txt: not UTF-8 text (byte 2)"),
    Case("NUL byte in an image id",
         lambda r: (r / "voc/ImageSets/Main/trainval.txt").write_bytes(b"a\x00b\n"),
         "trainval.txt: 'Annotations/a\\x00b.xml' holds control characters"),
    Case("image symlinked from outside the dataset", link_outside("JPEGImages/a.jpg"),
         "outside the dataset"),
    Case("Annotations folder symlinked from outside the dataset", link_outside("Annotations"),
         "outside the dataset"),
    Case("params: unknown key", lambda r: set_params(r, {"anchors": {"ratioz": [1.0]}}),
         "params.yaml: unknown key 'anchors.ratioz' (valid keys in anchors: ratios, scales, "
         "stride)"),
    Case("params: wrong type", lambda r: set_params(r, {"data": {"min_size": "big"}}),
         "params.yaml: 'data.min_size' is 'big' (str); expected an integer"),
    Case("params: negative lr",
         lambda r: set_params(r, {"train": {"step1": {**TINY["train"]["step1"], "lr": -0.01}}}),
         "params.yaml: 'train.step1.lr' is -0.01; allowed: a number > 0"),
    Case("params: empty ratios", lambda r: set_params(r, {"anchors": {"ratios": []}}),
         "params.yaml: 'anchors.ratios' is []; allowed: a non-empty list of numbers > 0"),
    Case("params: min_size > max_size", lambda r: set_params(r, {"data": {"min_size": 200}}),
         "params.yaml: 'data.min_size' is 200; allowed: <= data.max_size (96)"),
    Case("params: fg fraction > 1", lambda r: set_params(r, {"rpn": {"fg_fraction": 1.5}}),
         "params.yaml: 'rpn.fg_fraction' is 1.5; allowed: a number in (0, 1]"),
    Case("params: weights for the small backbone",
         lambda r: set_params(r, {"backbone": {"weights": "vgg16.pth"}}),
         "params.yaml: 'backbone.weights' is 'vgg16.pth' (str); allowed: null unless backbone.name "
         "is vgg16"),
    Case("backbone weights file missing",
         with_prepared({"backbone": {"name": "vgg16", "weights": "no.pth"}}),
         "params.yaml: 'backbone.weights' file no.pth does not exist", "pretrain",
         layout.PRETRAIN.out),
    Case("backbone weights of another architecture",
         lambda r: vgg_weights(r, torchvision.models.resnet18().state_dict()),
         "weights.pth: not torchvision VGG16 weights", "pretrain", layout.PRETRAIN.out),
    Case("checkpoint that is not a checkpoint", corrupt_checkpoint,
         "data/step1/rpn.pt.partial/checkpoint.pt: not a checkpoint or model file",
         "step1_rpn", layout.STEP1_RPN.out),
    Case("unwritable output folder", occupy("data/prepared.zarr.partial"),
         "data/prepared.zarr.partial", "prepare", layout.PREPARE.out),
    Case("input artifact with a shard deleted",
         damaged_input(lambda a: (a / "labels/c/0/0/0/0").unlink()),
         "data/anchor_targets.zarr: array 'labels', shard c/0/0/0/0 is missing; run `dvc checkout",
         "step1_rpn", layout.STEP1_RPN.out),
    Case("input artifact with bytes flipped inside a shard",
         damaged_input(lambda a: flip_bytes(a / "deltas/c/0/0/0/0/0")),
         "data/anchor_targets.zarr: array 'deltas' is damaged at", "step1_rpn",
         layout.STEP1_RPN.out),
    Case("anchors that fit no object", with_prepared({"anchors": {"scales": [1000]}}),
         "params.yaml: 'anchors.scales' is [1000.0]: no anchor inside an image overlaps any of the",
         "anchor_targets", layout.ANCHOR_TARGETS.out),
    Case("proposal min size beyond every image",
         with_trained_rpn({"proposals": {"min_size": 100000}}),
         "params.yaml: 'proposals.min_size' is 100000; no proposal can be that large (the shorter "
         "side of every image is at most 48 px", "step1_proposals", layout.STEP1_PROPOSALS.out),
    Case("stale input artifact",
         lambda r: (prepared_project(r), set_params(r, {"anchors": {"scales": [2, 4]}})),
         "data/anchor_targets.zarr: stale, made with anchors.scales = ", "step1_rpn",
         layout.STEP1_RPN.out),
    Case("initial backbone of other backbone params",
         lambda r: (prepared_project(r), set_params(r, {"backbone": {"width": 16}})),
         "data/pretrain/backbone.pt: stale, made with backbone.width = ", "step1_rpn",
         layout.STEP1_RPN.out),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_no_artifact(tmp_path, case):
    write_voc(tmp_path / "voc", IMAGES)
    raw = with_changes(raw_params(), TINY)
    raw["data"].update(source="voc", root="voc", classes=["cat", "dog"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    case.damage(tmp_path)

    result = subprocess.run(
        [sys.executable, "-m", f"stages.{case.stage}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and case.message in lines[0], lines[0]
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / case.out).exists()
    # Unfinished work may stay to be resumed, but never marked complete.
    partial = tmp_path / f"{case.out}.partial"
    for metadata in partial.rglob("zarr.json") if partial.is_dir() else []:
        assert json.loads(metadata.read_text()).get("attributes", {}).get("complete") is not True
