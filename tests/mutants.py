"""Does the suite bite? Put realistic one-line bugs into the source, one at a time, run the tests
that should notice, and restore the source; print a table of which mutant each run caught.

    python -m tests.mutants [--only N,N,...] [--tests PATH ...]

Not collected by pytest (a maintainer's tool: run it after changing a test, before trusting
it). Each mutant replaces one exact, unique snippet of a source file."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
REACH = "tests/test_param_reach.py::test_each_declared_key_reaches_what_its_stages_compute[{}]"
LINEAGE = "tests/test_input_lineage.py::test_a_stage_refuses_an_input_from_another_lineage"


@dataclass(frozen=True)
class Mutant:
    kind: str
    file: str
    old: str
    new: str
    breaks: str
    tests: tuple[str, ...]


def reach(*keys: str) -> tuple[str, ...]:
    return tuple(REACH.format(key) for key in keys)


def lineage(*ids: str) -> tuple[str, ...]:
    return tuple(f"{LINEAGE}[{i}]" for i in ids)


MUTANTS = [
    # A param that never reaches its code.
    Mutant("param reach", "pipeline/training/rpn_objective.py", "self.params.box_sigma,", "1.0,",
           "RPN box loss with sigma 1, not rpn.box_sigma", reach("rpn.box_sigma")),
    Mutant("param reach", "pipeline/training/fast_rcnn_objective.py",
           "view_deltas, self.params.box_sigma", "view_deltas, 1.0",
           "Fast R-CNN box loss with sigma 1, not roi.box_sigma", reach("roi.box_sigma")),
    Mutant("param reach", "pipeline/model/rpn.py", "pre, post, params.nms_iou", "pre, post, 0.7",
           "proposal NMS ignores proposals.nms_iou", reach("proposals.nms_iou")),
    Mutant("param reach", "pipeline/model/faster_rcnn.py", "labels, params.nms_iou)",
           "labels, 0.5)", "detection NMS ignores detect.nms_iou", ("tests/test_thresholds.py",)),
    Mutant("param reach", "pipeline/training/fast_rcnn_objective.py",
           "p.batch_size, p.fg_fraction,", "p.batch_size, 0.25,",
           "RoI sampling ignores roi.fg_fraction", ("tests/test_thresholds.py",)),
    Mutant("param reach", "pipeline/training/rpn_objective.py", "self.params.fg_fraction,",
           "0.5,", "anchor sampling ignores rpn.fg_fraction", reach("rpn.fg_fraction")),
    Mutant("param reach", "pipeline/artifacts/anchor_targets.py",
           "target_params.fg_iou,\n            target_params.bg_iou,",
           "target_params.bg_iou,\n            target_params.fg_iou,",
           "anchor_targets.fg_iou and bg_iou swapped at the call site",
           ("tests/test_view_targets.py",)),
    Mutant("param reach", "pipeline/artifacts/anchor_targets.py",
           "target_params.allowed_border,", "0,", "anchor_targets.allowed_border ignored",
           reach("anchor_targets.allowed_border")),
    Mutant("param reach", "pipeline/training/fast_rcnn_objective.py", "iou >= p.fg_iou",
           "iou >= 0.5", "RoI foreground threshold ignores roi.fg_iou",
           ("tests/test_thresholds.py",)),
    Mutant("param reach", "pipeline/model/faster_rcnn.py", "[: params.max_detections]",
           "[:100]", "detect.max_detections ignored", reach("detect.max_detections")),
    Mutant("param reach", "pipeline/model/rpn.py", "params.min_size * scale", "0.0",
           "proposals.min_size ignored", reach("proposals.min_size")),
    Mutant("param reach", "pipeline/training/backbone_features.py",
           "    backbone.freeze_below(params.backbone.freeze_below)\n", "",
           "backbone.freeze_below ignored", reach("backbone.freeze_below")),
    Mutant("param reach", "pipeline/training/pretrain_objective.py",
           "BackboneFeatures(backbone, device, channels_last)",
           "BackboneFeatures(backbone, device)", "pretraining ignores train.channels_last",
           reach("train.channels_last")),
    Mutant("param reach", "pipeline/training/loop.py", "momentum=common.momentum,",
           "momentum=0.9,", "train.momentum ignored", reach("train.momentum")),
    # Flip augmentation.
    Mutant("flips", "pipeline/artifacts/views.py",
           "return flip_boxes(boxes, self.size(v)[1]) if flipped else boxes", "return boxes",
           "mirrored views keep the unmirrored boxes", ("tests/test_view_targets.py",)),
    Mutant("flips", "pipeline/artifacts/views.py", "*self.size(v), bool(flipped))",
           "*self.size(v), False)", "mirrored views keep the unmirrored pixels",
           ("tests/test_view_targets.py",)),
    # No quality floor.
    Mutant("quality floor", "pipeline/model/faster_rcnn.py", "(scores > params.score_thresh)",
           "(scores > 1.0)", "the detector returns no detection",
           ("tests/test_learning_floor.py",)),
    Mutant("quality floor", "pipeline/model/faster_rcnn.py",
           "    keep = batched_nms(boxes, scores, labels, params.nms_iou)",
           "    scores = scores.flip(0)\n"
           "    keep = batched_nms(boxes, scores, labels, params.nms_iou)",
           "detections scored with another box's score", ("tests/test_learning_floor.py",)),
    # Randomness compared only with itself.
    Mutant("randomness", "pipeline/training/loop.py",
           "derived_seed(run.common.seed, run.stage, iteration, p)",
           "derived_seed(run.common.seed, run.stage, p)",
           "per-view seeds ignore the iteration", ("tests/test_randomness.py",)),
    Mutant("randomness", "pipeline/training/loop.py",
           "torch.manual_seed(derived_seed(run.common.seed, run.stage, iteration))",
           "torch.manual_seed(derived_seed(run.common.seed, run.stage))",
           "dropout masks the same every iteration", ("tests/test_randomness.py",)),
    Mutant("randomness", "pipeline/training/loop.py", "manual_seed(derived_seed(seed, epoch))",
           "manual_seed(derived_seed(seed, 0))", "the same data order every epoch",
           ("tests/test_randomness.py",)),
    # Evaluation wiring.
    Mutant("evaluation", "pipeline/evaluation/metrics.py",
           '"ap_voc07": voc07_ap(curve) if has_gt', '"ap_voc07": area_ap(curve) if has_gt',
           "all-point AP reported as VOC07 11-point", ("tests/test_evaluation.py",)),
    Mutant("evaluation", "stages/evaluate.py",
           "[0].numpy() / prepared.scales[i] for i in images]", "[0].numpy() for i in images]",
           "recall with proposals in resized pixels, objects in original ones",
           ("tests/test_alternating.py::test_proposal_recall_is_measured_with_proposals_and_"
            "objects_in_the_same_pixels",)),
    Mutant("evaluation", "pipeline/evaluation/metrics.py",
           "positives = int(sum((~difficult).sum()",
           "positives = int(sum((difficult | ~difficult).sum()",
           "difficult objects counted as positives", ("tests/test_evaluation.py",)),
    # Provenance and fingerprints.
    Mutant("provenance", "pipeline/artifacts/reads.py",
           '                expect[f"inputs.{upstream.name}"] = self.fingerprints[upstream.name]',
           "                pass",
           "an input is never checked against the inputs opened before it (step 4 takes a "
           "cache of another step-2 detector)",
           lineage("step4_fast_rcnn<-step3_features-synthetic.seed",
                   "step4_fast_rcnn<-step3_features-train.seed")),
    Mutant("provenance", "pipeline/artifacts/reads.py",
           "opened = reader(source, self.expect(source))", "opened = reader(source, {})",
           "stages open their Zarr inputs unchecked",
           lineage("step2_fast_rcnn<-step1_proposal_targets-synthetic.seed")),
    Mutant("provenance", "pipeline/artifacts/provenance.py",
           "params_subset(params, stage.params)", "params_subset(params, stage.params[:1])",
           "an artifact records only the first params key its stage declares",
           ("tests/test_alternating.py::test_each_artifact_records_exactly_the_params_dvc_"
            "reruns_its_stage_for",)),
    Mutant("provenance", "pipeline/codebase.py",
           "    for relative in import_closure(module):\n        hasher",
           "    for relative in import_closure(module):\n        if relative.name == "
           "\"__init__.py\":\n            continue\n        hasher",
           "the code hash leaves out __init__.py files", ("tests/test_code_deps.py",)),
    Mutant("provenance", "pipeline/codebase.py", "        pending += _parents(name)\n", "",
           "the closure leaves out the packages' __init__.py", ("tests/test_code_deps.py",)),
    Mutant("provenance", "pipeline/layout.py",
           'params=("backbone", "rpn", "anchors", "augment", *TRAINING, "train.step1"),',
           'params=("backbone", "rpn", "anchors", "augment", *TRAINING),',
           "step 1 neither reruns nor restarts its checkpoints for its own schedule",
           ("tests/test_training.py::test_a_killed_step_resumes_only_with_its_own_schedule_"
            "unchanged",)),
    Mutant("provenance", "pipeline/artifacts/provenance.py",
           "    for key, value in recorded.items():\n        if key not in current:",
           "    for key, value in {}.items():\n        if key not in current:",
           "readers compare none of the params an input recorded",
           ("tests/test_input_lineage.py", "tests/test_store.py")),
    Mutant("provenance", "pipeline/artifacts/lineage.py", "    if root is None:\n        return",
           "    return", "no reader checks its inputs' lineage",
           ("tests/test_input_lineage.py", "tests/test_store.py")),
    Mutant("provenance", "pipeline/artifacts/lineage.py",
           "                pending.append((source.out, found[1]))\n", "",
           "the lineage check stops at an input's own inputs",
           ("tests/test_input_lineage.py",)),
    Mutant("shard size", "pipeline/artifacts/provenance.py",
           "params_subset(params, stage.params)",
           "params_subset(params, tuple(k for k in stage.params if k not in LAYOUT_ONLY))",
           "artifacts resumed in the old shard layout",
           ("tests/test_param_reach.py::test_a_killed_write_resumed_with_another_shard_size_"
            "ends_in_the_new_layout",)),
]  # fmt: skip


def run_mutant(mutant: Mutant, tests: tuple[str, ...]) -> tuple[bool, str, float]:
    """(caught, the last lines pytest printed, seconds); the source is restored either way."""
    path = REPO / mutant.file
    original = path.read_text()
    if original.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.file}: the snippet for '{mutant.breaks}' is not there once")
    began = time.monotonic()
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
             *tests],
            cwd=REPO, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    finally:
        path.write_text(original)
    tail = result.stdout.strip().splitlines()[-1:] or [result.stderr.strip()[-200:]]
    return result.returncode == 1, tail[0], time.monotonic() - began


@click.command()
@click.option("--only", default="", help="Comma-separated mutant numbers (1-based).")
@click.option("--tests", "override", multiple=True, help="Run these tests instead of each's own.")
def main(only: str, override: tuple[str, ...]) -> None:
    chosen = [int(n) for n in only.split(",") if n] or range(1, len(MUTANTS) + 1)
    caught = 0
    print("| # | kind | file:line | breaks | caught by | result |")
    print("|---|---|---|---|---|---|")
    for number in chosen:
        mutant = MUTANTS[number - 1]
        source = (REPO / mutant.file).read_text()
        line = source[: source.index(mutant.old)].count("\n") + 1
        hit, tail, seconds = run_mutant(mutant, override or mutant.tests)
        caught += hit
        tests = ", ".join(t.split("::")[-1][:60] for t in override or mutant.tests)
        verdict = "caught" if hit else f"SURVIVED ({tail})"
        print(f"| {number} | {mutant.kind} | {mutant.file}:{line} | {mutant.breaks} | {tests} "
              f"| {verdict}, {seconds:.0f} s |", flush=True)  # fmt: skip
    print(f"\n{caught} of {len(chosen)} caught")


if __name__ == "__main__":
    main()
