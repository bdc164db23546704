"""anchor_targets: label every anchor of every view (paper section 3.1.2)."""

from pathlib import Path

from pipeline.artifacts.anchor_targets import write_anchor_targets
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.provenance import Provenance
from pipeline.artifacts.reads import StageInputs
from pipeline.artifacts.views import ViewSet, make_views
from pipeline.config import Params
from pipeline.layout import ANCHOR_TARGETS, PREPARE
from pipeline.runner import stage_command


def label_anchors(params: Params, prepared: PreparedDataset, out: Path) -> dict:
    """Label every anchor of every view of `prepared` and write the artifact to `out`."""
    provenance = Provenance.of_stage(ANCHOR_TARGETS, params, {PREPARE.name: prepared.fingerprint})
    views = ViewSet(prepared, make_views(prepared.split, params.augment.flip))
    return write_anchor_targets(
        out, provenance, views, params.anchors, params.anchor_targets, params.store.shard_size
    )


def run(params: Params) -> dict:
    """Label every anchor of every view and write the anchor-target Zarr artifact."""
    prepared = StageInputs(ANCHOR_TARGETS, params).open(PREPARE, PreparedDataset.of)
    return label_anchors(params, prepared, ANCHOR_TARGETS.out)


main = stage_command(ANCHOR_TARGETS, run, ranks=True)

if __name__ == "__main__":
    main()
