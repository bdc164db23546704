"""Resize the dataset named by `data` and write it as the prepared Zarr artifact."""

import logging
from pathlib import Path

from pipeline.config import Params
from pipeline.prepared import prepare_dataset
from pipeline.runner import stage

OUT = Path("data/prepared.zarr")


@stage
def main(params: Params) -> None:
    """Resize the dataset named by `data` and write it as the prepared Zarr artifact."""
    counts = prepare_dataset(params.data, params.store, OUT)
    logging.info(
        "prepare: %(train_images)d train + %(test_images)d test images, %(boxes)d boxes "
        "(%(boxes_clipped)d clipped, %(boxes_dropped)d dropped)",
        counts,
    )


if __name__ == "__main__":
    main()
