"""step3_proposals: proposals of every train view from the step-3 RPN on the cached features
(train top-N), what step 4 trains on."""

from pipeline.artifacts.proposing import propose_on_cache
from pipeline.artifacts.reads import StageInputs
from pipeline.config import Params
from pipeline.data.records import TRAIN
from pipeline.layout import STEP3_PROPOSALS
from pipeline.runner import stage_command


def run(params: Params) -> dict:
    """Step 3: proposals of every train view from the step-3 RPN on the cached features."""
    return propose_on_cache(StageInputs(STEP3_PROPOSALS, params), TRAIN)


main = stage_command(STEP3_PROPOSALS, run, ranks=True)

if __name__ == "__main__":
    main()
