"""step3_test_proposals: proposals of every test view from the step-3 RPN (test top-N), for
the proposal recall `evaluate` reports; no training stage reads them."""

from pipeline.config import Params
from pipeline.data.records import TEST
from pipeline.layout import STEP3_TEST_PROPOSALS
from pipeline.runner import stage_command
from stages.step3_proposals import propose_split


def run(params: Params) -> dict:
    """Step 3: proposals of every test view from the step-3 RPN on the cached features."""
    return propose_split(params, STEP3_TEST_PROPOSALS, TEST)


main = stage_command(STEP3_TEST_PROPOSALS, run, ranks=True)

if __name__ == "__main__":
    main()
