"""Step 3: proposals of every view from the step-3 RPN on the cached features."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.step3_proposals)

if __name__ == "__main__":
    main()
