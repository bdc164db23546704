"""step1_proposals: proposals of every train view from the step-1 RPN (train top-N), what
step 2 trains on. `step1_test_proposals` does the same for the test views (test top-N)."""

import torch

from pipeline.artifacts.model_files import load_model
from pipeline.artifacts.prepared import PreparedDataset
from pipeline.artifacts.proposals import write_split_proposals
from pipeline.artifacts.store import expect_params
from pipeline.config import Params
from pipeline.data.records import TRAIN
from pipeline.data.views import ViewImages, ViewSet, split_views
from pipeline.devices import resolve_device
from pipeline.layout import PREPARE, STEP1_PROPOSALS, STEP1_RPN, Stage
from pipeline.model.backbones import saved_backbone
from pipeline.model.rpn import build_rpn, view_proposals
from pipeline.runner import stage_command


@torch.no_grad()
def propose_split(params: Params, stage: Stage, split: int) -> dict:
    """Proposals of the views of `split` from the step-1 backbone and RPN, written by `stage`."""
    device = resolve_device(params.train.device)
    prepared = PreparedDataset(PREPARE.out)
    saved = load_model(
        STEP1_RPN.out, STEP1_RPN.name, expect_params(params, "backbone", "rpn", "anchors")
    )
    backbone = saved_backbone(params.backbone, params.anchors.stride, saved["parts"]["backbone"])
    rpn = build_rpn(params.anchors, params.rpn, backbone.out_channels)
    rpn.load_state_dict(saved["parts"]["rpn"])
    backbone.eval().to(device)
    rpn.eval().to(device)
    views = ViewSet(prepared, split_views(prepared.split, params.augment.flip, split))
    train = split == TRAIN

    def propose(v: int, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = backbone(image.to(device))
        return view_proposals(
            rpn, features, params.anchors, params.proposals, views.size(v), views.scale(v), train
        )

    inputs = {STEP1_RPN.name: saved["fingerprint"], "prepared": prepared.fingerprint}
    return write_split_proposals(
        stage, params, views.views, train, inputs, propose, ViewImages(views), device
    )


def run(params: Params) -> dict:
    """Step 1: proposals of every train view from the step-1 RPN."""
    return propose_split(params, STEP1_PROPOSALS, TRAIN)


main = stage_command(STEP1_PROPOSALS, run, ranks=True)

if __name__ == "__main__":
    main()
