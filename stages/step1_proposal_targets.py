"""step1_proposal_targets: IoU, class and box target of every step-1 train proposal, the
candidates of step 2's mini-batches."""

from pipeline.artifacts.proposal_targets import label_proposals
from pipeline.artifacts.reads import StageInputs
from pipeline.config import Params
from pipeline.layout import STEP1_PROPOSAL_TARGETS, STEP1_PROPOSALS
from pipeline.runner import stage_command


def run(params: Params) -> dict:
    """Step 2's candidates: IoU, class and box target of every step-1 train proposal."""
    return label_proposals(StageInputs(STEP1_PROPOSAL_TARGETS, params), STEP1_PROPOSALS)


main = stage_command(STEP1_PROPOSAL_TARGETS, run, ranks=True)

if __name__ == "__main__":
    main()
