"""Step 1: proposals of every view from the step-1 RPN."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.step1_proposals)

if __name__ == "__main__":
    main()
