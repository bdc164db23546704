"""anchor_targets: label every anchor of every view (paper section 3.1.2)."""

from pathlib import Path

from pipeline.artifacts.anchor_targets import write_anchor_targets
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.store import Provenance
from pipeline.config import AnchorParams, AnchorTargetParams, Params, StoreParams, to_dict
from pipeline.data.views import ViewSet, make_views
from pipeline.layout import ANCHOR_TARGETS, PREPARE
from pipeline.runner import stage_command


def label_anchors(
    prepared: PreparedDataset,
    flip: bool,
    anchors: AnchorParams,
    targets: AnchorTargetParams,
    store: StoreParams,
    out: Path,
) -> dict:
    """Label every anchor of every view of `prepared` and write the artifact to `out`."""
    provenance = Provenance.of_stage(
        ANCHOR_TARGETS,
        params={
            "anchors": to_dict(anchors),
            "anchor_targets": to_dict(targets),
            "augment": {"flip": flip},
            "store": store.sharding(),
        },
        inputs={"prepared": prepared.fingerprint},
    )
    views = ViewSet(prepared, make_views(prepared.split, flip))
    return write_anchor_targets(out, provenance, views, anchors, targets, store.shard_size)


def run(params: Params) -> dict:
    """Label every anchor of every view and write the anchor-target Zarr artifact."""
    return label_anchors(
        PreparedDataset(PREPARE.out),
        params.augment.flip,
        params.anchors,
        params.anchor_targets,
        params.store,
        ANCHOR_TARGETS.out,
    )


main = stage_command(ANCHOR_TARGETS, run, ranks=True)

if __name__ == "__main__":
    main()
