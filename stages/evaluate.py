"""Measure the exported detector on the test split: VOC and COCO AP, proposal recall."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.evaluate)

if __name__ == "__main__":
    main()
