"""Every stage refuses every input of its own that was made from other params or other inputs.

Three tiny pipelines are run: the reference, one from another synthetic dataset (every
artifact has other inputs) and one with another `train.seed` (every trained artifact has other
params; what comes before pretraining is the same). For each input a stage reads (its deps in
dvc.yaml), the reference's copy of that input is swapped for another pipeline's, and the stage
is rerun with the reference's params: it must stop with an ArtifactError when the swapped
input differs, and run as before when it is the same file for file.

One kind of swap cannot be told: the prepared dataset of another synthetic set read by a stage
whose only input it is (anchor targets, pretraining). It records no input of its own and the
same params, so nothing in the project contradicts it: those stages must run, and their output
follows the dataset (DVC reruns them when it changes)."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest

from pipeline.config import Params, parse_params
from pipeline.errors import ArtifactError
from pipeline.layout import GENERATE, PREPARE, PRETRAIN, STAGES, Stage
from tests.conftest import TINY, raw_params, with_changes
from tests.stage_runs import (
    PIPELINE,
    copy_project,
    declared_inputs,
    run_stages,
    set_key,
    stages_between,
)

pytestmark = pytest.mark.slow

VARIANTS = {"synthetic.seed": 1, "train.seed": 1}

# The raw dataset is the source, not an artifact: prepare reads whatever it holds (and DVC
# reruns prepare when it changes), so it has no lineage to refuse.
READS = [
    (stage, source)
    for stage, sources in declared_inputs().items()
    for source in sources
    if source != GENERATE
]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> tuple[Params, dict[str, Path]]:
    """The reference params and the root of each pipeline ("reference" and each variant)."""
    base = tmp_path_factory.mktemp("lineage")
    raw = with_changes(raw_params(), TINY)
    params = parse_params(raw)
    roots = {"reference": base / "reference"}
    roots["reference"].mkdir()
    run_stages(roots["reference"], params, STAGES)
    for key, value in VARIANTS.items():
        changed = parse_params(set_key(raw, key, value))
        first = STAGES[0] if key.startswith("synthetic") else PRETRAIN
        roots[key] = copy_project(roots["reference"], base / key)
        run_stages(roots[key], changed, stages_between(first, STAGES[-1]))
    return params, roots


def same_files(a: Path, b: Path) -> bool:
    if a.is_file():
        return filecmp.cmp(a, b, shallow=False)
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def swapped_in(root: Path, other: Path, source: Stage) -> None:
    target = root / source.out
    if target.is_dir():
        shutil.rmtree(target)
        shutil.copytree(other / source.out, target)
    else:
        shutil.copyfile(other / source.out, target)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    ("stage", "source"), READS, ids=[f"{stage}<-{source.name}" for stage, source in READS]
)
def test_a_stage_refuses_an_input_from_another_lineage(stage, source, variant, pipelines, tmp_path):
    params, roots = pipelines
    root = copy_project(roots["reference"], tmp_path / "project")
    same = same_files(roots["reference"] / source.out, roots[variant] / source.out)
    swapped_in(root, roots[variant], source)
    sole_input = source == PREPARE and declared_inputs()[stage] == [PREPARE]
    if same or sole_input:  # nothing to refuse: the stage must run
        run_stages(root, params, [PIPELINE[stage]])
        return
    with pytest.raises(ArtifactError):
        run_stages(root, params, [PIPELINE[stage]])


def test_every_variant_changes_some_input_of_every_stage(pipelines):
    """So that no stage passes above only by being handed identical inputs."""
    _, roots = pipelines
    for stage, sources in declared_inputs().items():
        if not [s for s in sources if s != GENERATE]:  # the dataset alone: nothing to swap
            continue
        changed = [
            s
            for s in sources
            if s != GENERATE
            and not same_files(roots["reference"] / s.out, roots["synthetic.seed"] / s.out)
        ]
        assert changed, stage
