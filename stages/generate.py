"""generate: write the seeded synthetic dataset in PASCAL VOC layout."""

from pipeline.config import Params
from pipeline.data.synthetic import generate_synthetic
from pipeline.layout import GENERATE
from pipeline.runner import stage_command


def run(params: Params) -> dict:
    """Write the seeded synthetic dataset in PASCAL VOC layout."""
    return generate_synthetic(GENERATE.out, params.synthetic)


main = stage_command(GENERATE, run)

if __name__ == "__main__":
    main()
