"""Step 2: train Fast R-CNN and the backbone from the initial weights on step-1 proposals."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.step2_fast_rcnn)

if __name__ == "__main__":
    main()
