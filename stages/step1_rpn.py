"""Step 1: train the RPN and the backbone from the initial weights."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.step1_rpn)

if __name__ == "__main__":
    main()
