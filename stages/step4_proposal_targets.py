"""Step 4: IoU, class and box target of every step-3 proposal."""

from pipeline import steps
from pipeline.runner import stage

main = stage(steps.step4_proposal_targets)

if __name__ == "__main__":
    main()
