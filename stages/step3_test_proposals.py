"""step3_test_proposals: proposals of every test view from the step-3 RPN on the cached
features (test top-N), for the proposal recall `evaluate` reports; no training stage reads
them."""

from pipeline.artifacts.proposing import propose_on_cache
from pipeline.artifacts.reads import StageInputs
from pipeline.config import Params
from pipeline.data.records import TEST
from pipeline.layout import STEP3_TEST_PROPOSALS
from pipeline.runner import stage_command


def run(params: Params) -> dict:
    """Step 3: proposals of every test view from the step-3 RPN on the cached features."""
    return propose_on_cache(StageInputs(STEP3_TEST_PROPOSALS, params), TEST)


main = stage_command(STEP3_TEST_PROPOSALS, run, ranks=True)

if __name__ == "__main__":
    main()
