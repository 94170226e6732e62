"""VQA metrics on hand-computed cases."""

import pytest

from vqa_experiments.vqa_metrics import harmonic_mean_per_type, vqa_accuracy_report


def test_report_hand_computed():
    # type 0: 3 questions, 2 right; type 1: 1 question, right; type 2: 2 questions, 1 right
    gt = [1, 2, 3, 4, 5, 6]
    pred = [1, 2, 0, 4, 5, 0]
    qtypes = [0, 0, 0, 1, 2, 2]
    r = vqa_accuracy_report(pred, gt, qtypes, num_types=3)
    assert r["overall"] == pytest.approx(4 / 6)
    assert r["per_type"]["0"]["accuracy"] == pytest.approx(2 / 3)
    assert r["per_type"]["1"]["accuracy"] == 1.0
    assert r["per_type"]["2"]["accuracy"] == 0.5
    assert r["mean_per_type"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    # harmonic: 3 / (1.5 + 1 + 2) = 2/3
    assert r["extras"]["harmonic_mean_per_type"] == pytest.approx(2 / 3)


def test_missing_type_counts_as_zero_in_the_fixed_divisor():
    r = vqa_accuracy_report([0, 1], [0, 1], [0, 0], num_types=5)
    assert r["overall"] == 1.0
    assert r["mean_per_type"] == pytest.approx(1 / 5)  # the reference's hard-coded divisor
    assert r["per_type"]["3"]["count"] == 0
    assert r["extras"]["harmonic_mean_per_type"] == 0.0


def test_unknown_answer_is_always_wrong():
    r = vqa_accuracy_report([-1, 2], [-1, 2], [0, 1], num_types=2)
    assert r["overall"] == 0.5
    assert r["per_type"]["0"]["accuracy"] == 0.0


def test_harmonic_helper():
    assert harmonic_mean_per_type([0.5, 0.5], 2) == pytest.approx(0.5)
    assert harmonic_mean_per_type([1.0, 0.25], 2) == pytest.approx(2 / 5)
    assert harmonic_mean_per_type([1.0, 0.0], 2) == 0.0
