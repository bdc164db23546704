"""Step 1: IoU, class and box target of every step-1 proposal."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.step1_proposal_targets)

if __name__ == "__main__":
    main()
