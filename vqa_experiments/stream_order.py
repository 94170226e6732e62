"""The streaming orders and evaluation boundaries of the reference VQA trainer.

- ``iid``: ``random.Random(666).shuffle`` of the (filtered) training rows. The permutation depends
  only on the number of rows.
- ``qtype``: stable sort of the rows by question type, then whole type blocks in a shuffled order:
  with K types 0..K-1, ``S = list(range(K))`` is shuffled by ``random.Random(666)`` and type ``t``
  is ranked by ``S[t]``. This gives CLEVR [0, 2, 1, 4, 3] and TDIUC
  [7, 0, 3, 1, 8, 4, 10, 11, 5, 6, 9, 2]; within a block rows keep their file order.
  When the present types are not exactly 0..K-1 (small synthetic data), the reference raises
  KeyError; here the present types are relabelled by rank first, and the same rule is applied.
- boundaries: ``qtype``: every position where the type changes, plus N; ``iid``: ``int(N * p)``
  for p = 0.1 ... 0.9, plus N. Rows [0, boundaries[0]) are the base-initialisation set.
- validation order (``val_order``): the reference loads the validation rows through the same
  function with the validation arrangement: ``iid``: ``random.Random(666).shuffle`` of the val
  rows; ``qtype``: a stable sort by the raw question type (no shuffled block order: that is
  applied to the training split only). Batches are consecutive chunks of ``val_batch_size`` rows
  of that order, each sorted by question length, longest first (a stable sort).
"""
import random

import numpy as np

ORDER_SEED = 666
IID_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def type_block_order(present_types, seed=ORDER_SEED):
    """The order in which the type blocks are streamed, for the given set of present types."""
    present = sorted({int(t) for t in present_types})
    keys = list(range(len(present)))
    random.Random(seed).shuffle(keys)
    rank_key = {t: keys[r] for r, t in enumerate(present)}
    return sorted(present, key=lambda t: rank_key[t])


def stream_order(qtypes, data_order, seed=ORDER_SEED):
    """Indices (into the given rows) in streaming order, as an int64 numpy array."""
    qtypes = np.asarray(qtypes).reshape(-1)
    n = len(qtypes)
    if data_order == "iid":
        idx = list(range(n))
        random.Random(seed).shuffle(idx)
        return np.asarray(idx, dtype=np.int64)
    if data_order == "qtype":
        blocks = type_block_order(qtypes.tolist(), seed)
        rank = {t: i for i, t in enumerate(blocks)}
        keys = np.asarray([rank[int(t)] for t in qtypes], dtype=np.int64)
        return np.argsort(keys, kind="stable").astype(np.int64)
    raise ValueError(f"unknown data order {data_order!r}; choose 'iid' or 'qtype'")


def stream_boundaries(ordered_qtypes, data_order):
    """Boundaries (sample counts at which to evaluate) for rows already in streaming order."""
    ordered_qtypes = np.asarray(ordered_qtypes).reshape(-1)
    n = len(ordered_qtypes)
    if n == 0:
        return []
    if data_order == "iid":
        bounds = [int(n * p) for p in IID_FRACTIONS]
    elif data_order == "qtype":
        bounds = (np.flatnonzero(ordered_qtypes[1:] != ordered_qtypes[:-1]) + 1).tolist()
    else:
        raise ValueError(f"unknown data order {data_order!r}; choose 'iid' or 'qtype'")
    bounds.append(n)
    return [int(b) for b in bounds]


def val_order(qtypes, data_order, seed=ORDER_SEED):
    """The reference's order of the validation rows (indices into the given rows)."""
    qtypes = np.asarray(qtypes).reshape(-1)
    if data_order == "iid":
        idx = list(range(len(qtypes)))
        random.Random(seed).shuffle(idx)
        return np.asarray(idx, dtype=np.int64)
    if data_order == "qtype":
        return np.argsort(qtypes.astype(np.int64), kind="stable").astype(np.int64)
    raise ValueError(f"unknown data order {data_order!r}; choose 'iid' or 'qtype'")


def reference_val_batches(qtypes, qlens, data_order, batch_size, seed=ORDER_SEED):
    """The reference's validation batches: lists of row indices, each chunk of ``val_order``
    sorted by question length, longest first, ties in order (as its ``collate_batch``)."""
    order = val_order(qtypes, data_order, seed)
    qlens = np.asarray(qlens).reshape(-1)
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batches.append(chunk[np.argsort(-qlens[chunk], kind="stable")])
    return batches
