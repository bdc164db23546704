"""step3_proposals: proposals of every train view from the step-3 RPN on the cached features
(train top-N), what step 4 trains on. `step3_test_proposals` does the same for the test views."""

import torch

from pipeline.artifacts.features import CachedFeatures, Features
from pipeline.artifacts.model_files import load_model
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposals import write_split_proposals
from pipeline.artifacts.store import expect_params
from pipeline.config import Params
from pipeline.data.records import TRAIN
from pipeline.data.views import ViewSet, split_views, view_rows
from pipeline.devices import resolve_device
from pipeline.layout import PREPARE, STEP3_FEATURES, STEP3_PROPOSALS, STEP3_RPN, Stage
from pipeline.model.rpn import build_rpn, view_proposals
from pipeline.runner import stage_command


@torch.no_grad()
def propose_split(params: Params, stage: Stage, split: int) -> dict:
    """Proposals of the views of `split` from the step-3 RPN on the cache, written by `stage`."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARE.out)
    cache = Features(
        STEP3_FEATURES.out,
        expect={**expect_params(params, "augment"), "inputs.prepared": prepared.fingerprint},
    )
    saved = load_model(STEP3_RPN.out, STEP3_RPN.name, expect_params(params, "rpn", "anchors"))
    rpn = build_rpn(params.anchors, params.rpn, cache.channels)
    rpn.load_state_dict(saved["parts"]["rpn"])
    rpn.eval().to(device)
    views = ViewSet(prepared, split_views(prepared.split, params.augment.flip, split))
    cached = CachedFeatures(cache, view_rows(views.views, cache.views, str(cache.path)))
    train = split == TRAIN

    def propose(v: int, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return view_proposals(
            rpn,
            features.to(device),
            params.anchors,
            params.proposals,
            views.size(v),
            views.scale(v),
            train,
        )

    inputs = {STEP3_RPN.name: saved["fingerprint"], STEP3_FEATURES.name: cache.fingerprint}
    return write_split_proposals(stage, params, views.views, train, inputs, propose, cached, device)


def run(params: Params) -> dict:
    """Step 3: proposals of every train view from the step-3 RPN on the cached features."""
    return propose_split(params, STEP3_PROPOSALS, TRAIN)


main = stage_command(STEP3_PROPOSALS, run, ranks=True)

if __name__ == "__main__":
    main()
