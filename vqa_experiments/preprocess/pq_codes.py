"""Fit REMIND's product quantizer on base-init image features and store uint8 codes of every image.

The reference encoded and decoded every image and stored only the float reconstructions; here the
codes and the centroids are stored (DATA_FORMATS.md section 6) and the trainer decodes on the fly.
Which images train the quantizer is decided here; sampling, fitting and encoding are the core's
``remind.feature_store``.
"""
import os

import numpy as np

from remind.feature_store import encode_store, fit_quantizer, open_feature_store, sample_map_vectors
from vqa_experiments.stream_order import stream_boundaries, stream_order
from vqa_experiments.vqa_data import (VQADataError, dataset_files, image_index_from_iids, quantizer_digest,
                                      load_h5_attrs, load_questions)

PQ_TRAIN_SETS = ("reference", "base_init")
DEFAULT_NUM_CLASSES = {"clevr": 28, "tdiuc": 1480}
IID_PQ_FRACTION = 0.1
COLUMNS = ("iids", "image_names")  # the per-image columns of features and codes files


def _question_rows(questions, image_index, split):
    missing = [int(i) for i in questions["iid"] if int(i) not in image_index]
    if missing:
        raise VQADataError(f"{len(missing)} {split} questions refer to images missing from the "
                           f"features file (first image id: {missing[0]})")
    return np.asarray([image_index[int(i)] for i in questions["iid"]], dtype=np.int64)


def pq_train_images(train, image_index, order, train_set, num_classes):
    """Sorted feature rows of the images the quantizer is fitted on (the reference's choice or ours).

    ``reference``: iid -> the first 10% of the sorted distinct rows used by train questions;
    qtype -> the images of train questions with ``qtypeidx == 0``.
    ``base_init``: the images of the base-init questions of ``order`` (rows with
    ``aidx < num_classes`` put in streaming order; the part before the first boundary).
    """
    rows = _question_rows(train, image_index, "train")
    if train_set == "reference":
        if order == "iid":
            distinct = np.unique(rows)
            return distinct[:int(IID_PQ_FRACTION * len(distinct))]
        return np.unique(rows[train["qtypeidx"] == 0])
    keep = np.flatnonzero(train["aidx"] < num_classes)
    if len(keep) == 0:
        raise VQADataError(f"no train question has an answer index below --num_classes "
                           f"{num_classes}")
    perm = keep[stream_order(train["qtypeidx"][keep], order)]
    first = stream_boundaries(train["qtypeidx"][perm], order)[0]
    return np.unique(rows[perm[:first]])


def _train_vectors(store, rows, order, max_train_vectors, nbits, rng):
    """(rows used, [K, C] vectors): whole maps of ``rows``, at most about ``max_train_vectors``."""
    rows, x = sample_map_vectors(store, rows, max_train_vectors, rng)
    if len(x) < 2 ** nbits:
        raise VQADataError(
            f"{order}: the PQ training set has {len(rows)} images = {len(x)} vectors, "
            f"fewer than 2**nbits = {2 ** nbits}; use more (or larger) images, "
            f"--pq_train_set base_init or a smaller --nbits")
    return rows, x


def fit_and_encode(dataset, data_dir, orders, train_set="reference", num_codebooks=32, nbits=8,
                   max_train_vectors=262144, num_classes=None, features_path=None, seed=0,
                   device="cpu", chunk_images=256, progress=True):
    """For each order: fit a quantizer, save ``pq_<ds>_<order>.npz`` and ``codes_<ds>_<order>.h5``.

    The quantizer of each order is fitted on the maps of that order's training images (at most
    ``ceil(max_train_vectors / (H * W))`` of them, 0: all), drawn from one NumPy generator seeded
    with ``seed`` that runs through the orders in turn. ``progress``: True, False or None (auto).
    """
    if train_set not in PQ_TRAIN_SETS:
        raise VQADataError(f"--pq_train_set must be one of {', '.join(PQ_TRAIN_SETS)}")
    if not 1 <= nbits <= 8:
        raise VQADataError(f"--nbits must be in 1..8 (codes are stored as uint8), got {nbits}")
    files = dataset_files(data_dir, dataset)
    features_path = features_path or files["features"]
    num_classes = DEFAULT_NUM_CLASSES[dataset] if num_classes is None else num_classes
    train = load_questions(files["train"], ["iid", "qtypeidx", "aidx"])
    val = load_questions(files["val"], ["iid"])
    feat_attrs = load_h5_attrs(features_path)
    kept_attrs = {k: feat_attrs[k] for k in ("arch", "layer", "image_size", "weights") if k in feat_attrs}
    results = {}
    with open_feature_store(features_path, "NHWC", COLUMNS) as store:
        _, H, W, C = store.shape
        image_index = image_index_from_iids(store.column("iids"), features_path)
        _question_rows(val, image_index, "val")
        rng = np.random.default_rng(seed)
        for order in orders:
            out = dataset_files(data_dir, dataset, order)
            rows = pq_train_images(train, image_index, order, train_set, num_classes)
            rows, x = _train_vectors(store, rows, order, max_train_vectors, nbits, rng)
            pq = fit_quantizer(x, num_codebooks, nbits, seed=seed, device=device)
            del x
            pq.save(out["pq"])
            attrs = {"dataset": dataset, "order": order, "pq_train_set": train_set,
                     "pq_file": os.path.basename(out["pq"]), "pq_sha256": quantizer_digest(pq),
                     "num_train_images": len(rows),
                     "num_train_vectors": len(rows) * H * W,
                     "feature_shape": np.asarray([H, W, C], dtype=np.int64),
                     "num_codebooks": num_codebooks, "nbits": nbits, **kept_attrs}
            encode_store(pq, store, out["codes"], columns=COLUMNS, attrs=attrs, chunk=chunk_images,
                         progress=progress, desc=f"PQ codes ({order})")
            results[order] = {"num_train_images": len(rows), "codes": out["codes"], "pq": out["pq"]}
    return results
