"""The four-step pipeline run in-process on the tiny profile: caching is exact, steps 3 and 4
never touch the backbone, and every stage is deterministic."""

import dataclasses
import importlib
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner
from PIL import Image
from torchvision.ops import box_iou

from bench.project import inside
from pipeline import layout
from pipeline.artifacts import memory
from pipeline.artifacts.exported_model import load_detector
from pipeline.artifacts.features import STORED_AS, CachedFeatures, Features, write_features
from pipeline.artifacts.memory import holds_in_memory
from pipeline.artifacts.model_files import load_model
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposals import Proposals
from pipeline.artifacts.provenance import Provenance
from pipeline.artifacts.views import ViewSet, view_rows
from pipeline.cli.main import main
from pipeline.config import to_dict
from pipeline.data.records import TEST
from pipeline.data.synthetic import SYNTHETIC_CLASSES
from pipeline.data.voc import read_voc_split
from pipeline.errors import ArtifactError, ParamError
from pipeline.evaluation.drawing import GT
from pipeline.evaluation.metrics import ImageDetections
from pipeline.model import backbones
from pipeline.model.roi_head import build_head, rois_with_batch_index
from pipeline.model.rpn import build_rpn, view_proposals
from stages import evaluate as evaluate_stage
from tests.conftest import REPO, stage_function, tiny_params
from tests.stage_runs import declared_params

pytestmark = pytest.mark.slow

STAGES = [stage_function(stage.name) for stage in layout.STAGES]
STAGE_NAMES = [stage.name for stage in layout.STAGES]
BACKBONE_FREE = [
    stage_function(stage.name)
    for stage in (
        layout.STEP3_RPN,
        layout.STEP3_PROPOSALS,
        layout.STEP3_TEST_PROPOSALS,
        layout.STEP4_PROPOSAL_TARGETS,
        layout.STEP4_FAST_RCNN,
    )
]


def run_stages(root, p):
    with inside(root):
        for stage in STAGES:
            stage(p)
    return root, p


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    return run_stages(tmp_path_factory.mktemp("pipeline"), tiny_params())


@pytest.fixture(scope="module")
def tiny_pipeline_at_stride_16(tmp_path_factory):
    """The paper's stride (the default profile's is 8)."""
    p = tiny_params()
    p = dataclasses.replace(p, anchors=dataclasses.replace(p.anchors, stride=16))
    return run_stages(tmp_path_factory.mktemp("pipeline16"), p)


@pytest.mark.parametrize("pipeline", ["tiny_pipeline", "tiny_pipeline_at_stride_16"])
def test_cached_features_give_exactly_what_the_exported_detector_computes(pipeline, request):
    root, p = request.getfixturevalue(pipeline)
    with inside(root):
        detector = load_detector(layout.EXPORT.out)
        assert detector.backbone.stride == p.anchors.stride
        prepared = PreparedDataset(layout.PREPARE.out)
        features = Features(layout.STEP3_FEATURES.out)
        views = ViewSet(prepared, features.views)
        step3_rpn = build_rpn(p.anchors, p.rpn, features.channels)
        step3_rpn.load_state_dict(load_model(layout.STEP3_RPN.out, "step3_rpn")["parts"]["rpn"])
        step4_head = build_head(p.backbone, p.roi, features.channels,
                                len(prepared.classes), p.anchors.stride)  # fmt: skip
        step4_head.load_state_dict(
            load_model(layout.STEP4_FAST_RCNN.out, "step4_fast_rcnn")["parts"]["head"]
        )
        stored = Proposals(layout.STEP3_TEST_PROPOSALS.out, layout.STEP3_TEST_PROPOSALS.name)
        step3_rpn.eval(), step4_head.eval()
        for v in views.of_split(TEST):
            image = int(views.views[v, 0])
            scale = float(prepared.scales[image])
            direct = detector.forward_view(views.image(v), views.size(v), scale)
            cached = CachedFeatures(features)([int(v)])
            torch.testing.assert_close(cached, direct["features"], rtol=1e-5, atol=1e-6)
            with torch.no_grad():
                boxes, scores = view_proposals(step3_rpn, cached, p.anchors, p.proposals,
                                               views.size(v), scale, train=False)  # fmt: skip
                logits, deltas = step4_head(cached, rois_with_batch_index([boxes]))
            torch.testing.assert_close(boxes, direct["proposals"], rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(scores, direct["objectness"], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(logits, direct["class_logits"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(deltas, direct["box_deltas"], rtol=1e-5, atol=1e-5)
            (row,) = view_rows(views.views[[v]], stored.views, "test proposals")
            torch.testing.assert_close(stored.of_view(int(row))[0], direct["proposals"])


@pytest.mark.parametrize(("dtype", "rtol"), [("float16", 2**-11), ("bfloat16", 2**-8)])
def test_a_half_precision_cache_holds_the_features_to_its_rounding_in_fewer_bytes(
    tiny_pipeline, tmp_path, dtype, rtol
):
    root, p = tiny_pipeline
    with inside(root):
        exact = Features(layout.STEP3_FEATURES.out)
        prepared = PreparedDataset(layout.PREPARE.out)
        backbone = backbones.build_backbone(p.backbone, p.anchors.stride)
        saved = load_model(layout.STEP2_FAST_RCNN.out, "step2_fast_rcnn")
        backbone.load_state_dict(saved["parts"]["backbone"])
        out = tmp_path / "features.zarr"
        provenance = Provenance(layout.STEP3_FEATURES.name, {}, {})
        views = ViewSet(prepared, exact.views)
        write_features(out, provenance, backbone, views, torch.device("cpu"), 4, dtype)
        half = Features(out)
        rows = list(range(len(exact.views)))
        reference, rounded = CachedFeatures(exact)(rows), CachedFeatures(half)(rows)
    assert half.dtype == dtype and half.features.dtype == STORED_AS[dtype]
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, reference)
    torch.testing.assert_close(rounded, reference, rtol=rtol, atol=1e-6)
    stored = sum(f.stat().st_size for f in (out / "features").rglob("*") if f.is_file())
    full = sum(
        f.stat().st_size
        for f in (root / layout.STEP3_FEATURES.out / "features").rglob("*")
        if f.is_file()
    )
    assert stored < 0.7 * full


def test_features_in_memory_read_the_same_and_always_is_refused_past_the_memory_budget(
    tiny_pipeline, monkeypatch
):
    root, _ = tiny_pipeline
    key = "train.features_in_memory"
    with inside(root):
        on_disk, in_memory = (Features(layout.STEP3_FEATURES.out) for _ in range(2))
        assert not holds_in_memory("never", key, [on_disk.features])
        assert holds_in_memory("auto", key, [in_memory.features])
        in_memory.hold_in_memory("features")
        assert isinstance(in_memory.features, np.ndarray)
        rows = [0, 2, 1]
        assert torch.equal(CachedFeatures(on_disk)(rows), CachedFeatures(in_memory)(rows))
        monkeypatch.setattr(memory, "memory_budget", lambda: 1000)
        assert not holds_in_memory("auto", key, [on_disk.features])
        with pytest.raises(ParamError, match="'train.features_in_memory' is 'always' but"):
            holds_in_memory("always", key, [on_disk.features])
        assert not isinstance(on_disk.features, np.ndarray)


def test_image_stages_hold_the_images_in_memory_and_keep_readers_for_what_streams(
    tiny_pipeline,
):
    root, p = tiny_pipeline
    with inside(root):
        pretrain, step1, step2 = (
            importlib.import_module(f"stages.{stage.name}").training(p)
            for stage in (layout.PRETRAIN, layout.STEP1_RPN, layout.STEP2_FAST_RCNN)
        )
    for images in (pretrain.read.views, step1.read.features.views, step2.read.features.views):
        assert isinstance(images.prepared.images, np.ndarray)
    assert pretrain.in_memory  # images are all it reads: no reader process
    assert not step1.in_memory and not step2.in_memory  # their targets stream from Zarr


def test_steps_3_and_4_never_build_or_run_a_backbone(tiny_pipeline, monkeypatch):
    root, p = tiny_pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a backbone was used")

    monkeypatch.setattr(backbones, "build_backbone", refuse)
    monkeypatch.setattr(backbones.Backbone, "__init__", refuse)
    monkeypatch.setattr(backbones.Backbone, "forward", refuse)
    outputs = [layout.STEP3_RPN.out, layout.STEP4_FAST_RCNN.out]
    with inside(root):
        before = [path.read_bytes() for path in outputs]
        for stage in BACKBONE_FREE:
            stage(p)
        # Rerun from the same inputs, they write the same bytes: the stages are deterministic.
        assert [path.read_bytes() for path in outputs] == before


def test_exported_detector_finds_boxes_on_a_test_image(tiny_pipeline):
    root, _ = tiny_pipeline
    with inside(root):
        detector = load_detector(layout.EXPORT.out)
        prepared = PreparedDataset(layout.PREPARE.out)
        image = int(next(i for i in range(len(prepared)) if prepared.split[i] == TEST))
        h, w = prepared.image_sizes[image]
        out = detector.detect(prepared.images[image][:h, :w])
    assert out["boxes"].shape[1] == 4
    assert len(out["boxes"]) == len(out["scores"]) == len(out["labels"])
    assert (out["labels"] >= 1).all() and (out["labels"] < len(prepared.classes)).all()


def test_evaluate_writes_metrics_detections_curves_and_samples(tiny_pipeline):
    root, _ = tiny_pipeline
    metrics = json.loads((root / "data/eval/metrics.json").read_text())
    for key in ("map_voc07", "map_area", "map_coco", "map_coco_50", "per_class"):
        assert key in metrics
    assert 0.0 <= metrics["map_voc07"] <= 1.0
    assert set(metrics["step1_proposals"]) == {"recall@300_iou0.5", "recall@300_iou0.7"}
    assert sorted(p.stem for p in (root / "data/eval/pr").iterdir()) == sorted(SYNTHETIC_CLASSES)
    assert len(list((root / "data/eval/samples").glob("*.png"))) == 3  # the tiny test split
    results = json.loads((root / "data/eval/detections.json").read_text())
    assert {"image_id", "image_name", "category_id", "category_name", "bbox", "score"} <= set(
        results[0]
    )


def test_show_draws_the_requested_layers_on_the_prepared_image(tiny_pipeline, tmp_path):
    root, _ = tiny_pipeline
    out = tmp_path / "show.png"
    result = CliRunner().invoke(
        main, ["show", "--image", "000000", "--layers", "gt,anchors,proposals", "--step", "1",
               "--data", str(root / "data"), "--scale", "1", "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    prepared = PreparedDataset(root / layout.PREPARE.out)
    h, w = prepared.image_sizes[0]
    drawn = np.asarray(Image.open(out))
    assert drawn.shape[1] == w and drawn.shape[0] > h  # the legend below the image
    picture = drawn[:h]
    x1, y1, _, y2 = prepared.boxes(0)[0].round().int().tolist()
    edge = picture[y1 + (y2 - y1) // 2, max(x1 - 1, 0) : x1 + 2]
    assert (edge == GT).all(axis=1).any()  # the gt box's left edge is drawn in the gt colour
    plain = prepared.images[0][:h, :w]
    assert (picture != plain).any(axis=2).mean() > 0.01
    assert (drawn[h:] == GT).all(axis=2).any()  # the legend's gt entry
    enlarged = tmp_path / "big.png"
    result = CliRunner().invoke(
        main, ["show", "--image", "000000", "--data", str(root / "data"), "--scale", "3",
               "-o", str(enlarged)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(enlarged).width == 3 * w


def test_report_is_one_page_with_every_figure_inlined_and_no_external_url(tiny_pipeline, tmp_path):
    root, _ = tiny_pipeline
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        main, ["report", "--data", str(root / "data"), "--params", str(root / "params.yaml"),
               "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    page = out.read_text()
    metrics = json.loads((root / layout.EVALUATE.out / "metrics.json").read_text())
    assert f"{metrics['map_voc07']:.3f}" in page and "AP per class" in page
    figures = 5 + 2 + len(list((root / layout.EVALUATE.out / "samples").glob("*.png")))
    assert page.count('src="data:image/png;base64,') == page.count("src=") == figures
    assert "http://" not in page and "https://" not in page and "url(" not in page
    missing = CliRunner().invoke(main, ["report", "--data", str(tmp_path), "-o", str(out)])
    assert missing.exit_code == 1 and "metrics.json: not found" in missing.output


def test_show_rejects_an_unknown_layer_and_image(tiny_pipeline, tmp_path):
    root, _ = tiny_pipeline
    args = ["show", "--data", str(root / "data"), "-o", str(tmp_path / "x.png")]
    result = CliRunner().invoke(main, [*args, "--image", "000000", "--layers", "gt,heat"])
    assert result.exit_code == 1 and "--layers: unknown heat" in result.output
    result = CliRunner().invoke(main, [*args, "--image", "nope"])
    assert result.exit_code == 1 and "no image with id or index 'nope'" in result.output


def test_detect_on_files_agrees_with_the_evaluation_and_skips_bad_images(tiny_pipeline, tmp_path):
    root, _ = tiny_pipeline
    prepared = PreparedDataset(root / layout.PREPARE.out)
    test_image = next(i for i in range(len(prepared)) if prepared.split[i] == TEST)
    name = prepared.image_ids[test_image]
    jpeg = root / "data/raw/synthetic/JPEGImages" / f"{name}.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg")
    out = tmp_path / "detections.json"
    result = CliRunner().invoke(
        main, ["detect", str(jpeg), str(broken), "--model", str(root / layout.EXPORT.out),
               "--out", str(out), "--draw", str(tmp_path / "drawn"), "--score-thresh", "0"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "broken.jpg: unreadable image" in result.output
    found = json.loads(out.read_text())
    evaluated = [r for r in json.loads((root / "data/eval/detections.json").read_text())
                 if r["image_name"] == name]  # fmt: skip
    assert len(found) == len(evaluated)
    for a, b in zip(found, evaluated, strict=True):
        assert a["category_name"] == b["category_name"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.05)
    drawn = np.asarray(Image.open(tmp_path / "drawn" / f"{name}.png"))
    assert drawn.shape[:2] == tuple(prepared.group["original_sizes"][test_image])


def test_export_refuses_parts_made_with_other_params(tiny_pipeline):
    root, p = tiny_pipeline
    other_roi = dataclasses.replace(p, roi=dataclasses.replace(p.roi, size=p.roi.size + 1))
    other_anchors = dataclasses.replace(
        p, anchors=dataclasses.replace(p.anchors, scales=(2.0, 4.0, 8.0))
    )
    with inside(root):
        with pytest.raises(
            ArtifactError, match=r"data/step2/detector.pt: stale, made with roi.size = "
        ):
            stage_function("export")(other_roi)
        with pytest.raises(
            ArtifactError, match=r"data/step3/rpn.pt: stale, made with anchors.scales = "
        ):
            stage_function("export")(other_anchors)


def test_step_3_refuses_features_made_from_another_dataset(tiny_pipeline, tmp_path):
    root, p = tiny_pipeline
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    metadata = copy / layout.STEP3_FEATURES.out / "zarr.json"
    document = json.loads(metadata.read_text())
    document["attributes"]["inputs"]["prepare"] = "another dataset"
    metadata.write_text(json.dumps(document))
    with inside(copy), pytest.raises(ArtifactError, match=r"stale, inputs.prepare is"):
        stage_function("step3_rpn")(p)


def test_ground_truth_fed_as_detections_through_the_evaluate_wiring_scores_one(
    tiny_pipeline, tmp_path, monkeypatch
):
    """Scales, ids, difficult flags and the test split all line up: perfect detections get
    mAP 1.0 from the same code that measures the detector."""
    root, _ = tiny_pipeline

    # The annotations as written, in original pixels: independent of the prepared artifact.
    raw = {r.image_id: r for r in read_voc_split(root / layout.GENERATE.out, "test",
                                                 SYNTHETIC_CLASSES)}  # fmt: skip

    def ground_truth_as_detections(detector, prepared, images):
        records = [raw[prepared.image_ids[i]] for i in images]
        return [ImageDetections(r.boxes, np.ones(len(r.boxes)), r.labels) for r in records]

    monkeypatch.setattr(evaluate_stage, "detect_prepared", ground_truth_as_detections)
    with inside(root):
        source = layout.STEP1_TEST_PROPOSALS
        proposals = {"step1_proposals": Proposals(source.out, source.name)}
        prepared, detector = PreparedDataset(layout.PREPARE.out), load_detector(layout.EXPORT.out)
        evaluate_stage.evaluate(prepared, detector, proposals, tmp_path / "e")
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["map_voc07"] == pytest.approx(1.0)
    assert metrics["map_area"] == pytest.approx(1.0)
    assert metrics["map_coco"] == pytest.approx(1.0)
    results = json.loads((tmp_path / "e" / "detections.json").read_text())
    assert len(results) > 0


def test_proposal_recall_is_measured_with_proposals_and_objects_in_the_same_pixels(tiny_pipeline):
    """Recomputed here in the prepared (resized) pixels both are stored in; evaluate measures
    in original pixels, and IoU does not depend on the scale, so the two agree only when the
    proposals and the objects were brought to the same pixels."""
    root, _ = tiny_pipeline
    with inside(root):
        metrics = json.loads((layout.EVALUATE.out / "metrics.json").read_text())
        prepared = PreparedDataset(layout.PREPARE.out)
        assert (prepared.scales[prepared.split == TEST] != 1).any()
        for name, stage in (("step1_proposals", layout.STEP1_TEST_PROPOSALS),
                            ("step3_proposals", layout.STEP3_TEST_PROPOSALS)):  # fmt: skip
            stored = Proposals(stage.out, stage.name)
            best = []
            for v, (image, flipped) in enumerate(stored.views):
                objects = prepared.boxes(int(image))[~prepared.difficult(int(image))]
                if flipped or not len(objects):
                    continue
                boxes = stored.of_view(v)[0][: evaluate_stage.RECALL_TOP]
                best.append(box_iou(objects, boxes).max(dim=1).values)
            covered = torch.cat(best)
            for threshold in (0.5, 0.7):
                recall = float((covered >= threshold).double().mean())
                key = f"recall@{evaluate_stage.RECALL_TOP}_iou{threshold:g}"
                assert metrics[name][key] == pytest.approx(recall, abs=1e-9), (name, key)
            assert 0 < metrics[name][f"recall@{evaluate_stage.RECALL_TOP}_iou0.5"] < 1


def leaf_values(tree: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf of nested sections by its dotted key."""
    leaves: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            leaves.update(leaf_values(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def test_each_artifact_records_exactly_the_params_dvc_reruns_its_stage_for(tiny_pipeline):
    """The keys (and this run's values) of every params key in a stage's dvc.yaml `params:`
    list are what its artifact records: no more (a change that would restart its work for
    nothing) and no fewer (a change DVC reruns it for, its readers could not see)."""
    root, p = tiny_pipeline
    everything = leaf_values(to_dict(p))
    recorded_by = {}
    with inside(root):
        for stage in layout.STAGES:
            out = stage.out
            if out.suffix == ".zarr":
                recorded_by[stage.name] = zarr.open_group(out, mode="r").attrs["params"]
            elif out.suffix == ".pt":
                recorded_by[stage.name] = load_model(out, stage.name)["params"]
    assert set(recorded_by) == set(STAGE_NAMES) - {"generate", "evaluate"}
    for name, keys in declared_params().items():
        if name not in recorded_by:
            continue
        declared = {
            leaf: value
            for leaf, value in everything.items()
            if any(leaf == key or leaf.startswith(f"{key}.") for key in keys)
        }
        assert leaf_values(recorded_by[name]) == declared, name


def readme_frcnn_commands() -> list[str]:
    """Every `frcnn` command line of the README's shell blocks, without its comment."""
    commands, in_shell = [], False
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("```"):
            in_shell = line.strip() == "```sh"
            continue
        if in_shell and line.startswith("frcnn "):
            commands.append(line.split("#", 1)[0].strip())
    return commands


def test_every_frcnn_command_the_readme_shows_runs_on_a_finished_pipeline(tiny_pipeline, tmp_path):
    root, _ = tiny_pipeline
    commands = readme_frcnn_commands()
    assert {c.split()[1] for c in commands} >= {"report", "inspect", "verify", "show", "detect"}
    copy = shutil.copytree(root, tmp_path / "project")
    with inside(copy):
        for command in commands:
            result = CliRunner().invoke(main, shlex.split(command)[1:])
            assert result.exit_code == 0, (command, result.output)
        assert Path("report.html").stat().st_size > 0
        assert isinstance(json.loads(Path("detections.json").read_text()), list)
        assert Image.open("show.png").size[0] > 0


def test_stages_run_directly_refuse_parts_trained_on_inputs_since_replaced(tiny_pipeline, tmp_path):
    """Step 2 retrained (a schedule no later part records) and its cache rebuilt: the step-3
    RPN, its proposals and everything trained on them were made from the old cache."""
    root, p = tiny_pipeline
    copy = shutil.copytree(root, tmp_path / "copy")
    step2 = dataclasses.replace(p.train.step2, iterations=p.train.step2.iterations + 1)
    longer = dataclasses.replace(p, train=dataclasses.replace(p.train, step2=step2))
    with inside(copy):
        stage_function("step2_fast_rcnn")(longer)
        stage_function("step3_features")(longer)
        for stage in ("step3_proposals", "step3_test_proposals", "export"):
            with pytest.raises(
                ArtifactError, match=r"data/step3/rpn.pt: stale, inputs.step3_features is"
            ):
                stage_function(stage)(longer)
        with pytest.raises(ArtifactError, match=r"stale, made from another data/step3/features"):
            stage_function("step4_fast_rcnn")(longer)
