"""The params loader: the repo's file loads, and every kind of mistake names its key."""

import pytest
import yaml

from pipeline.config import load_params, parse_params
from pipeline.errors import ParamError
from tests.conftest import REPO


def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_load_into_typed_sections(params):
    assert params.anchors.ratios == (0.5, 1.0, 2.0)
    assert isinstance(params.anchors.scales[0], float)
    assert params.anchors.num_anchors == 15
    assert params.data.classes is None
    assert params.detect.box_vote_iou == 0.8


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("anchors", "ratioz", [1.0], "unknown key 'anchors.ratioz' (valid keys in anchors: "
         "ratios, scales, stride)"),
        ("anchors", "stride", "16", "'anchors.stride' is '16' (str); expected an integer"),
        ("anchors", "stride", 0, "'anchors.stride' is 0; allowed: 8 or 16, the feature stride"),
        ("anchors", "ratios", [], "'anchors.ratios' is []; allowed: a non-empty list"),
        ("anchors", "scales", [1, -2], "'anchors.scales' is [1, -2]; allowed"),
        ("anchor_targets", "fg_iou", 1.5, "'anchor_targets.fg_iou' is 1.5; allowed: a number "
         "in (0, 1]"),
        ("anchor_targets", "bg_iou", 0.0, "'anchor_targets.bg_iou' is 0.0; allowed: a number "
         "in (0, 1]"),
        ("roi", "fg_iou", 0, "'roi.fg_iou' is 0; allowed: a number in (0, 1]"),
        ("roi", "size", 1000, "'roi.size' is 1000; allowed: an integer in [1, 32]"),
        ("roi", "fc_dim", 10**6, "'roi.fc_dim' is 1000000; allowed: an integer in [1, 16384]"),
        ("roi", "fg_fraction", 0.0, "'roi.fg_fraction' is 0.0; allowed: a number in (0, 1]"),
        ("rpn", "fg_fraction", 0.0, "'rpn.fg_fraction' is 0.0; allowed: a number in (0, 1]"),
        ("rpn", "channels", 10**6, "'rpn.channels' is 1000000; allowed: an integer in [1, 4096]"),
        ("data", "coco_annotations", "annotations/{spilt}.json",
         "'data.coco_annotations' is 'annotations/{spilt}.json' (str); allowed: a path ending"),
        ("data", "coco_images", "images/{split", "'data.coco_images' is 'images/{split' (str)"),
        ("pretrain", "crop_size", 40, "'pretrain.crop_size' is 40; allowed: a multiple of 16"),
        ("pretrain", "stride", 32, "'pretrain.stride' is 32; allowed: 8 or 16, the feature"),
        ("pretrain", "background_crops", 0, "'pretrain.background_crops' is 0; allowed"),
        ("pretrain", "zoom_out", 0.5, "'pretrain.zoom_out' is 0.5; allowed: a number in [1, 8]"),
        ("anchor_targets", "bg_iou", 0.8, "'anchor_targets.bg_iou' is 0.8; allowed: <= "
         "anchor_targets.fg_iou (0.5)"),
        ("data", "source", "imagenet", "'data.source' is 'imagenet' (str); allowed: synthetic | "
         "voc | coco"),
        ("data", "min_size", 900, "'data.min_size' is 900; allowed: <= data.max_size (384)"),
        ("data", "classes", ["a", "a"], "'data.classes' is ['a', 'a']; allowed: null or a "
         "non-empty list of distinct"),
        ("detect", "box_vote_iou", 0, "'detect.box_vote_iou' is 0; allowed: null or a number "
         "in (0, 1]"),
        ("detect", "scales", [1.0, 8], "'detect.scales' is [1.0, 8]; allowed: a non-empty "
         "list of numbers in [0.25, 4]"),
        ("detect", "enlarged_max_box", 0, "'detect.enlarged_max_box' is 0; allowed: null or a "
         "number > 0"),
        ("store", "shard_size", True, "'store.shard_size' is True; expected an integer"),
        ("synthetic", "max_side", 100, "'synthetic.max_side' is 100; allowed: >= "
         "synthetic.min_side (240)"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key_the_value_and_what_is_allowed(section, key, value, message):
    raw = raw_params()
    raw[section][key] = value
    with pytest.raises(ParamError) as caught:
        parse_params(raw)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_key_is_named():
    raw = raw_params()
    del raw["anchors"]["stride"]
    with pytest.raises(ParamError, match="missing key 'anchors.stride'"):
        parse_params(raw)


def test_unknown_section_lists_the_valid_ones():
    raw = raw_params()
    raw["trian"] = {}
    with pytest.raises(ParamError, match="unknown key 'trian' .*anchor_targets, anchors"):
        parse_params(raw)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamError, match="params.yaml: file not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("anchors: [1, 2\n")
    with pytest.raises(ParamError, match=r"bad.yaml: not valid YAML \(line"):
        load_params(bad)
    bad.write_bytes(b"anchors:\n  stride: 8 # \xe9\n")
    with pytest.raises(ParamError, match=r"bad.yaml: not UTF-8 text \(byte 23\)"):
        load_params(bad)


def test_a_params_file_with_a_byte_order_mark_loads(tmp_path):
    marked = tmp_path / "params.yaml"
    marked.write_bytes(b"\xef\xbb\xbf" + (REPO / "params.yaml").read_bytes())
    assert load_params(marked) == load_params(REPO / "params.yaml")
