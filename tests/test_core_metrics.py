"""remind.metrics on inputs whose answers are worked out by hand."""
import math

import pytest
import torch

from remind.metrics import omega, topk_accuracy, topk_correct


def test_omega_is_the_mean_ratio_to_the_offline_accuracy():
    # Ratios 80/80 = 1.0, 60/75 = 0.8, 45/60 = 0.75; mean 2.55 / 3 = 0.85.
    assert omega([80.0, 60.0, 45.0], [80.0, 75.0, 60.0]) == pytest.approx(0.85, abs=1e-12)
    # The same in fractions: the ratio does not depend on the unit.
    assert omega([0.8, 0.6, 0.45], [0.8, 0.75, 0.6]) == pytest.approx(0.85, abs=1e-12)


def test_omega_single_point_and_above_one():
    assert omega([50.0], [100.0]) == 0.5
    # A streaming learner above the offline model at a point gives a ratio above 1: (1.5 + 0.5) / 2.
    assert omega([90.0, 30.0], [60.0, 60.0]) == 1.0


@pytest.mark.parametrize("acc, offline", [([1.0, 2.0], [1.0]), ([], [])])
def test_omega_refuses_unequal_or_empty_lists(acc, offline):
    with pytest.raises(ValueError, match="omega"):
        omega(acc, offline)


def test_topk_hits_and_accuracies():
    scores = torch.tensor([[0.1, 0.7, 0.2],   # target 1: top-1 hit
                           [0.5, 0.3, 0.2],   # target 1: second highest, top-2 hit only
                           [0.6, 0.3, 0.1]])  # target 2: lowest, no hit for k <= 2
    targets = torch.tensor([1, 1, 2])
    hits = topk_correct(scores, targets, ks=(1, 2, 5))
    assert hits[1].tolist() == [True, False, False]
    assert hits[2].tolist() == [True, True, False]
    assert hits[5].tolist() == [True, True, True]  # k above the number of classes: every class
    acc = topk_accuracy(scores, targets, ks=(1, 2))
    assert acc[1] == pytest.approx(100.0 / 3) and acc[2] == pytest.approx(200.0 / 3)
    assert all(math.isnan(v) for v in topk_accuracy(torch.zeros(0, 3), torch.zeros(0), ks=(1, 5)).values())
