import torch

from pipeline.model.boxes import decode
from pipeline.model.targets import proposal_targets

STDS = (0.1, 0.1, 0.2, 0.2)


def test_gt_boxes_join_the_candidates_with_iou_one():
    proposals = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    gt = torch.tensor([[0.0, 0, 10, 20]])
    boxes, iou, labels, deltas = proposal_targets(proposals, gt, torch.tensor([3]), STDS)
    assert len(boxes) == 3
    torch.testing.assert_close(iou, torch.tensor([0.5, 0.0, 1.0]))
    assert labels.tolist() == [3, 3, 3]  # the class of the best gt, whatever the IoU
    torch.testing.assert_close(decode(boxes[:1], deltas[:1], STDS), gt)
    torch.testing.assert_close(deltas[2], torch.zeros(4))
    # normalised: dh = log(2) / 0.2 for the first proposal
    torch.testing.assert_close(deltas[0, 3], torch.log(torch.tensor(2.0)) / 0.2)


def test_without_gt_every_candidate_is_background():
    _boxes, iou, labels, deltas = proposal_targets(
        torch.tensor([[0.0, 0, 10, 10]]),
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
        STDS,
    )
    assert iou.tolist() == [0.0] and labels.tolist() == [0] and not deltas.any()


def test_more_gt_than_proposals():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    boxes, iou, labels, _ = proposal_targets(
        torch.tensor([[21.0, 21, 30, 30]]), gt, torch.tensor([1, 2, 3]), STDS
    )
    assert len(boxes) == 4
    assert labels.tolist() == [2, 1, 2, 3]
    assert iou[1:].tolist() == [1.0, 1.0, 1.0]
