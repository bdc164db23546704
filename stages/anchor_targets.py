"""Label every anchor of every prepared image and write the anchor-target Zarr artifact."""

import logging
from pathlib import Path

from pipeline.anchor_target_artifact import write_anchor_targets
from pipeline.config import Params
from pipeline.prepared import PreparedDataset
from pipeline.runner import stage

PREPARED = Path("data/prepared.zarr")
OUT = Path("data/anchor_targets.zarr")


@stage
def main(params: Params) -> None:
    """Label every anchor of every prepared image and write the anchor-target Zarr artifact."""
    prepared = PreparedDataset(PREPARED)
    counts = write_anchor_targets(
        prepared, params.augment.flip, params.anchors, params.anchor_targets, params.store, OUT
    )
    logging.info(
        "anchor_targets: %(foreground)d foreground, %(background)d background, "
        "%(ignore)d ignored anchor labels",
        counts,
    )


if __name__ == "__main__":
    main()
