import numpy as np
import pytest
import torch
from scipy import stats

from remind.replay_buffer import ReplayBuffer, ReplayBufferError


def _filled(n, capacity=None, num_classes=5, shape=(2, 2, 4), seed=0):
    buf = ReplayBuffer(shape, capacity=capacity, seed=seed)
    for i in range(n):
        buf.add(torch.full(shape, i % 256, dtype=torch.uint8), i % num_classes, i)
    return buf


@pytest.mark.parametrize("n,k", [(40, 10), (4000, 20)])  # permutation path and sparse-draw path
def test_sampling_is_uniform_and_without_replacement(n, k):
    buf = _filled(n)
    counts = np.zeros(n)
    draws = 3000 if n == 40 else 6000
    for _ in range(draws):
        slots = buf.sample(k)
        assert len(slots) == k and len(torch.unique(slots)) == k
        counts[slots.numpy()] += 1
    # Each slot is drawn with probability k/n per call: a chi-square test of uniformity.
    p = stats.chisquare(counts).pvalue
    assert p > 1e-3, p
    # Positions within a draw are exchangeable too: the first slot is uniform as well.
    firsts = np.bincount(np.array([int(buf.sample(k)[0]) for _ in range(2000)]) % 10, minlength=10)
    assert stats.chisquare(firsts).pvalue > 1e-3


def test_sample_more_than_stored_returns_all():
    buf = _filled(7)
    assert sorted(buf.sample(50).tolist()) == list(range(7))
    assert len(ReplayBuffer((1,)).sample(5)) == 0


def test_eviction_takes_from_the_largest_class_and_respects_the_cap():
    shape = (1, 1, 2)
    buf = ReplayBuffer(shape, capacity=10, seed=1)
    labels = [0] * 6 + [1] * 3 + [2] * 1
    for i, y in enumerate(labels):
        buf.add(torch.zeros(shape, dtype=torch.uint8), y, i)
    assert buf.is_full and buf.class_counts() == {0: 6, 1: 3, 2: 1}
    evicted = buf.add(torch.ones(shape, dtype=torch.uint8), 3, 100)
    assert evicted in range(6)  # one of class 0's items
    assert len(buf) == 10 and buf.class_counts() == {0: 5, 1: 3, 2: 1, 3: 1}
    for i in range(30):  # keep adding: each eviction must hit a class holding the most items
        before = buf.class_counts()
        y = 4 + i % 3
        buf.add(torch.ones(shape, dtype=torch.uint8), y, 200 + i)
        after = buf.class_counts()
        after_minus_new = dict(after)
        after_minus_new[y] -= 1
        shrunk = [c for c in before if after_minus_new.get(c, 0) == before[c] - 1]
        assert len(shrunk) == 1 and before[shrunk[0]] == max(before.values())
        assert len(buf) == 10
    final = buf.class_counts()
    # Labels and ids stay consistent with the bookkeeping.
    stored = buf.labels[:len(buf)].tolist()
    assert {c: stored.count(c) for c in set(stored)} == final


def test_eviction_picks_uniformly_within_the_largest_class():
    shape = (1,)
    hits = np.zeros(8)
    for seed in range(800):
        buf = ReplayBuffer(shape, capacity=10, seed=seed)
        for i in range(8):
            buf.add(torch.zeros(shape, dtype=torch.uint8), 0, i)
        buf.add(torch.zeros(shape, dtype=torch.uint8), 1, 8)
        buf.add(torch.zeros(shape, dtype=torch.uint8), 2, 9)
        hits[buf.add(torch.zeros(shape, dtype=torch.uint8), 3, 10)] += 1
    assert stats.chisquare(hits).pvalue > 1e-3


def test_add_batch_equals_item_by_item_adds():
    shape = (2, 2, 3)
    codes = torch.randint(0, 256, (25, *shape), dtype=torch.uint8)
    labels = torch.tensor([i % 4 for i in range(25)])
    a = ReplayBuffer(shape, capacity=16, seed=5)
    a.add_batch(codes, labels, torch.arange(25))
    b = ReplayBuffer(shape, capacity=16, seed=5)
    for i in range(25):
        b.add(codes[i], int(labels[i]), i)
    n = len(a)
    assert n == len(b) == 16
    assert torch.equal(a.codes[:n], b.codes[:n]) and torch.equal(a.item_ids[:n], b.item_ids[:n])


def test_state_round_trip_continues_identically():
    shape = (2, 2, 4)
    a = _filled(30, capacity=20)
    b = ReplayBuffer(shape, capacity=20, seed=123)
    b.load_state_dict(a.state_dict())
    for i in range(40):
        code = torch.full(shape, i, dtype=torch.uint8)
        assert a.add(code, i % 7, 1000 + i) == b.add(code, i % 7, 1000 + i)
        assert torch.equal(a.sample(5), b.sample(5))
    assert torch.equal(a.codes, b.codes) and torch.equal(a.labels, b.labels)


def test_unbounded_growth_ids_only_and_memory():
    buf = ReplayBuffer(None, initial_allocation=4)
    for i in range(100):
        buf.add(None, i % 3, i)
    assert len(buf) == 100 and buf.codes is None
    assert sorted(buf.item_ids[buf.sample(100)].tolist()) == list(range(100))
    shape = (7, 7, 32)
    full = ReplayBuffer(shape, capacity=1000)
    full.add_batch(torch.zeros((1000, *shape), dtype=torch.uint8), torch.arange(1000) % 10, torch.arange(1000))
    raw = 1000 * 7 * 7 * 32
    assert raw <= full.nbytes <= 1.05 * raw
    with pytest.raises(ReplayBufferError, match="capacity"):
        ReplayBuffer(shape, capacity=0)
    other = ReplayBuffer((1, 1, 1))
    with pytest.raises(ReplayBufferError, match="shape"):
        other.load_state_dict(full.state_dict())


def test_oldest_eviction_removes_the_largest_class_oldest_item():
    shape = (1,)
    buf = ReplayBuffer(shape, capacity=6, eviction="oldest")
    for i, y in enumerate([0, 1, 0, 0, 1, 2]):
        buf.add(torch.zeros(shape, dtype=torch.uint8), y, i)
    assert buf.add(torch.zeros(shape, dtype=torch.uint8), 3, 6) == 0  # class 0 is largest; id 0 oldest
    assert buf.add(torch.zeros(shape, dtype=torch.uint8), 3, 7) in (1, 2)  # classes 0 and 1 tie at 2
    with pytest.raises(ReplayBufferError, match="eviction"):
        ReplayBuffer(shape, eviction="lifo")
