"""Label every anchor of every view and write the anchor-target Zarr artifact."""

from pipeline import data_steps
from pipeline.runner import stage

main = stage(data_steps.anchor_targets)

if __name__ == "__main__":
    main()
