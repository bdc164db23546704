"""Step 4: train only the Fast R-CNN-specific layers, from the cached features."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.step4_fast_rcnn)

if __name__ == "__main__":
    main()
