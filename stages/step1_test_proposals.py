"""step1_test_proposals: proposals of every test view from the step-1 RPN (test
top-N), for the proposal recall `evaluate` reports; no training stage reads them."""

from pipeline.artifacts.proposing import propose_on_images
from pipeline.artifacts.reads import StageInputs
from pipeline.config import Params
from pipeline.data.records import TEST
from pipeline.layout import STEP1_TEST_PROPOSALS
from pipeline.runner import stage_command


def run(params: Params) -> dict:
    """Step 1: proposals of every test view from the step-1 RPN."""
    return propose_on_images(StageInputs(STEP1_TEST_PROPOSALS, params), TEST)


main = stage_command(STEP1_TEST_PROPOSALS, run, ranks=True)

if __name__ == "__main__":
    main()
