"""Write the seeded synthetic dataset in PASCAL VOC layout."""

import logging
from pathlib import Path

from pipeline.config import Params
from pipeline.datasets.synthetic import generate_synthetic
from pipeline.runner import stage

OUT = Path("data/raw/synthetic")


@stage
def main(params: Params) -> None:
    """Write the seeded synthetic dataset in PASCAL VOC layout."""
    counts = generate_synthetic(OUT, params.synthetic)
    logging.info(
        "generate: %(images)d images, %(objects)d objects (%(difficult)d difficult)", counts
    )


if __name__ == "__main__":
    main()
