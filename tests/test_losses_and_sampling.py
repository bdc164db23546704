"""Losses on hand-computed cases; mini-batch sampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.model.losses import fast_rcnn_loss, mean_over_views, rpn_loss, smooth_l1
from pipeline.model.roi_head import ViewDropout
from pipeline.model.sampling import sample_foreground_background


def test_smooth_l1_switches_at_one_over_sigma_squared():
    x = torch.tensor([0.05, -0.1, 0.5, -2.0])
    # sigma 3: quadratic 4.5 x^2 below 1/9, linear |x| - 1/18 above
    want = torch.tensor([4.5 * 0.0025, 4.5 * 0.01, 0.5 - 1 / 18, 2.0 - 1 / 18])
    torch.testing.assert_close(smooth_l1(x, torch.zeros_like(x), 3.0), want)
    torch.testing.assert_close(
        smooth_l1(x, torch.zeros_like(x), 1.0), torch.tensor([0.00125, 0.005, 0.125, 1.5])
    )


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_smooth_l1_has_the_values_of_torch_smooth_l1_loss(sigma):
    generator = torch.Generator().manual_seed(0)
    predicted, target = torch.randn(2, 1000, 4, generator=generator)
    torch.testing.assert_close(
        smooth_l1(predicted, target, sigma),
        F.smooth_l1_loss(predicted, target, reduction="none", beta=1.0 / sigma**2),
    )


def test_rpn_loss_ignores_label_minus_one_and_normalises_by_sampled_count():
    logits = torch.tensor([[0.0, 2.0, -1.0, 5.0]])
    labels = torch.tensor([[1, 0, -1, 1]])
    deltas = torch.zeros(1, 4, 4)
    targets = torch.zeros(1, 4, 4)
    targets[0, 0, 0] = 1.0  # one positive off by 1 in dx
    targets[0, 2, :] = 9.0  # ignored anchor: must not count
    objectness, box = rpn_loss(logits, deltas, labels, targets, sigma=3.0)
    want = (math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-5))) / 3
    assert objectness.item() == pytest.approx(want, rel=1e-6)
    assert box.item() == pytest.approx((1 - 1 / 18) / 3, rel=1e-6)


def test_fast_rcnn_loss_uses_the_true_class_deltas_of_foreground_only():
    logits = torch.zeros(3, 3)  # uniform over 3 classes
    deltas = torch.zeros(3, 3, 4)
    deltas[0, 2] = torch.tensor([1.0, 0, 0, 0])  # class-2 deltas of RoI 0 (its true class)
    deltas[0, 1] = torch.tensor([5.0, 5, 5, 5])  # another class: ignored
    deltas[2, 0] = torch.tensor([7.0, 7, 7, 7])  # background RoI: no box loss
    labels = torch.tensor([2, 1, 0])
    targets = torch.zeros(3, 4)
    classification, box = fast_rcnn_loss(logits, deltas, labels, targets, sigma=1.0)
    assert classification.item() == pytest.approx(math.log(3), rel=1e-6)
    assert box.item() == pytest.approx(0.5 / 3, rel=1e-6)


def test_sampling_caps_foreground_and_fills_with_background():
    g = torch.Generator().manual_seed(0)
    fg_mask = torch.zeros(1000, dtype=torch.bool)
    fg_mask[:300] = True
    fg, bg = sample_foreground_background(fg_mask, ~fg_mask, 256, 0.5, g)
    assert (len(fg), len(bg)) == (128, 128)
    assert fg_mask[fg].all() and not fg_mask[bg].any()
    assert len(set(fg.tolist())) == 128

    few = torch.zeros(1000, dtype=torch.bool)
    few[:10] = True
    fg, bg = sample_foreground_background(few, ~few, 256, 0.5, g)
    assert (len(fg), len(bg)) == (10, 246)

    fg, bg = sample_foreground_background(few, torch.zeros(1000, dtype=torch.bool), 256, 0.5, g)
    assert (len(fg), len(bg)) == (10, 0)


def test_sampling_is_reproducible_from_the_seed():
    mask = torch.rand(500, generator=torch.Generator().manual_seed(1)) > 0.5
    a = sample_foreground_background(mask, ~mask, 64, 0.25, torch.Generator().manual_seed(7))
    b = sample_foreground_background(mask, ~mask, 64, 0.25, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_mean_over_views_normalises_each_view_on_its_own():
    terms = [{"a": torch.tensor(1.0)}, {"a": torch.tensor(3.0)}, {"a": torch.tensor(8.0)}]
    assert mean_over_views(terms)["a"].item() == 4.0


def test_a_views_dropout_mask_is_its_own_whatever_shares_the_call():
    layer = ViewDropout(0.5).train()
    x = torch.ones(8, 300)

    def masked(rows_and_seeds):
        layer.by_view = [(n, torch.Generator().manual_seed(s)) for n, s in rows_and_seeds]
        return layer(x[: sum(n for n, _ in rows_and_seeds)])

    together = masked([(5, 1), (3, 2)])
    assert torch.equal(together[:5], masked([(5, 1)]))
    assert torch.equal(together[5:], masked([(3, 2)]))
    assert not torch.equal(together[:3], together[5:])
    assert set(together.unique().tolist()) == {0.0, 2.0}  # kept values scaled by 1 / (1 - p)
    assert abs((together == 0).float().mean().item() - 0.5) < 0.05
    layer.eval()
    assert torch.equal(layer(x), x)
