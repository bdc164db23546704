"""step4_proposal_targets: IoU, class and box target of every step-3 train proposal, the
candidates of step 4's mini-batches."""

from pipeline.artifacts.proposal_targets import label_proposals
from pipeline.artifacts.reads import StageInputs
from pipeline.config import Params
from pipeline.layout import STEP3_PROPOSALS, STEP4_PROPOSAL_TARGETS
from pipeline.runner import stage_command


def run(params: Params) -> dict:
    """Step 4's candidates: IoU, class and box target of every step-3 train proposal."""
    return label_proposals(StageInputs(STEP4_PROPOSAL_TARGETS, params), STEP3_PROPOSALS)


main = stage_command(STEP4_PROPOSAL_TARGETS, run, ranks=True)

if __name__ == "__main__":
    main()
