"""step4_proposal_targets: IoU, class and box target of every step-3 train proposal, the
candidates of step 4's mini-batches."""

from pipeline.config import Params
from pipeline.layout import STEP3_PROPOSALS, STEP4_PROPOSAL_TARGETS
from pipeline.runner import stage_command
from stages.step1_proposal_targets import targets_of


def run(params: Params) -> dict:
    """Step 4: IoU, class and box target of every step-3 train proposal."""
    return targets_of(params, STEP3_PROPOSALS, STEP4_PROPOSAL_TARGETS)


main = stage_command(STEP4_PROPOSAL_TARGETS, run, ranks=True)

if __name__ == "__main__":
    main()
