"""prepare: resize the dataset named by `data` into the prepared Zarr artifact."""

import logging
from pathlib import Path

from pipeline.artifacts.prepared import write_prepared
from pipeline.artifacts.reads import StageInputs
from pipeline.config import Params
from pipeline.data.catalog import plan_dataset
from pipeline.layout import PREPARE
from pipeline.runner import stage_command

log = logging.getLogger(__name__)


def prepare_dataset(params: Params, out: Path) -> dict:
    """Read the dataset `data` names, resize it and write the prepared artifact to `out`."""
    plan = plan_dataset(params.data)
    provenance = StageInputs(PREPARE, params).provenance(dataset=plan.fingerprint)
    summary = write_prepared(out, provenance, plan, params.store.shard_size)
    if plan.boxes_clipped:
        log.warning("%s: %d boxes clipped to their image", PREPARE.name, plan.boxes_clipped)
    return summary


def run(params: Params) -> dict:
    """Resize the dataset named by `data` and write it as the prepared Zarr artifact."""
    return prepare_dataset(params, PREPARE.out)


main = stage_command(PREPARE, run)

if __name__ == "__main__":
    main()
