"""Stream orders and boundaries of the reference on known inputs."""
import random

import numpy as np

from vqa_experiments.stream_order import stream_boundaries, stream_order, type_block_order

CLEVR_COUNTS = [251749, 165406, 125654, 94086, 63094]
TDIUC_COUNTS = [441810, 246243, 133074, 111857, 62862, 44674, 26042, 21602, 19476, 5848, 1461, 350]


def test_type_block_orders_of_the_reference():
    assert type_block_order(range(5)) == [0, 2, 1, 4, 3]
    assert type_block_order(range(12)) == [7, 0, 3, 1, 8, 4, 10, 11, 5, 6, 9, 2]


def _qtype_boundaries(counts):
    # Rows in file order: an interleaving, so that the stable sort matters.
    qtypes = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(qtypes)
    order = stream_order(qtypes, "qtype")
    return qtypes, order, stream_boundaries(qtypes[order], "qtype")


def test_clevr_qtype_boundaries_full_size():
    qtypes, order, bounds = _qtype_boundaries(CLEVR_COUNTS)
    assert bounds == [251749, 377403, 542809, 605903, 699989]
    # Within each block rows keep file order (stable sort).
    block = order[:bounds[0]]
    assert np.all(np.diff(block) > 0) and np.all(qtypes[block] == 0)
    assert np.all(qtypes[order[bounds[0]:bounds[1]]] == 2)


def test_tdiuc_qtype_boundaries_full_size():
    _, _, bounds = _qtype_boundaries(TDIUC_COUNTS)
    assert bounds == [21602, 463412, 575269, 821512, 840988, 903850, 905311, 905661, 950335, 976377,
                      982225, 1115299]


def test_iid_boundaries_full_size():
    assert stream_boundaries(np.zeros(699989), "iid") == [69998, 139997, 209996, 279995, 349994, 419993,
                                                          489992, 559991, 629990, 699989]
    assert stream_boundaries(np.zeros(1115299), "iid") == [111529, 223059, 334589, 446119, 557649, 669179,
                                                           780709, 892239, 1003769, 1115299]


def test_iid_order_is_random_666_shuffle():
    expected = list(range(10))
    random.Random(666).shuffle(expected)
    assert stream_order(np.zeros(10), "iid").tolist() == expected
    # Hand-checked value for a small known input.
    assert stream_order(np.zeros(5), "iid").tolist() == [0, 2, 1, 4, 3]


def test_qtype_small_known_input():
    qtypes = np.array([1, 0, 2, 4, 3, 0, 2, 1, 4, 3])
    order = stream_order(qtypes, "qtype")
    # Blocks 0, 2, 1, 4, 3; rows inside a block in file order.
    assert order.tolist() == [1, 5, 2, 6, 0, 7, 3, 8, 4, 9]
    assert stream_boundaries(qtypes[order], "qtype") == [2, 4, 6, 8, 10]


def test_qtype_missing_types_are_ranked():
    # Types {0, 3, 7}: relabelled 0, 1, 2, then the 3-type rule.
    expected_ranks = type_block_order(range(3))
    assert type_block_order([7, 0, 3, 3]) == [[0, 3, 7][r] for r in expected_ranks]
