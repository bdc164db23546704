"""Resize the dataset named by `data` and write it as the prepared Zarr artifact."""

from pipeline import data_steps
from pipeline.runner import stage

main = stage(data_steps.prepare)

if __name__ == "__main__":
    main()
