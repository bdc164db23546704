"""step1_proposals: proposals of every train view from the step-1 RPN (train top-N),
what step 2 trains on."""

from pipeline.artifacts.proposing import propose_on_images
from pipeline.artifacts.reads import StageInputs
from pipeline.config import Params
from pipeline.data.records import TRAIN
from pipeline.layout import STEP1_PROPOSALS
from pipeline.runner import stage_command


def run(params: Params) -> dict:
    """Step 1: proposals of every train view from the step-1 RPN."""
    return propose_on_images(StageInputs(STEP1_PROPOSALS, params), TRAIN)


main = stage_command(STEP1_PROPOSALS, run, ranks=True)

if __name__ == "__main__":
    main()
