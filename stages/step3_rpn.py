"""Step 3: train only the RPN-specific layers, from the cached features."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.step3_rpn)

if __name__ == "__main__":
    main()
