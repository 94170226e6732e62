"""Fit REMIND's product quantizer on base-init image features and store uint8 codes of every image.

The reference encoded and decoded every image and stored only the float reconstructions; here the
codes and the centroids are stored (DATA_FORMATS.md section 6) and the trainer decodes on the fly.
"""
import math
import os

import h5py
import numpy as np
import torch
from tqdm import tqdm

from remind.quantizer import ProductQuantizer
from vqa_experiments.preprocess.io import atomic_h5, put_strings, set_attrs
from vqa_experiments.stream_order import stream_boundaries, stream_order
from vqa_experiments.vqa_data import (VQADataError, dataset_files, image_index_from_iids,
                                      load_h5_attrs, load_questions)

PQ_TRAIN_SETS = ("reference", "base_init")
DEFAULT_NUM_CLASSES = {"clevr": 28, "tdiuc": 1480}
IID_PQ_FRACTION = 0.1


def _question_rows(questions, image_index, split):
    missing = [int(i) for i in questions["iid"] if int(i) not in image_index]
    if missing:
        raise VQADataError(f"{len(missing)} {split} questions refer to images missing from the "
                           f"features file (first image id: {missing[0]})")
    return np.asarray([image_index[int(i)] for i in questions["iid"]], dtype=np.int64)


def pq_train_images(train, image_index, order, train_set, num_classes):
    """Sorted feature rows of the images the quantizer is fitted on (spec section 4).

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


def _read_rows(dset, rows, chunk=256):
    """``dset[rows]`` for sorted rows, read in chunks (h5py fancy indexing needs increasing)."""
    parts = [dset[np.asarray(rows[s:s + chunk])] for s in range(0, len(rows), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0,) + dset.shape[1:], dset.dtype)


def fit_and_encode(dataset, data_dir, orders, train_set="reference", num_codebooks=32, nbits=8,
                   max_train_vectors=262144, num_classes=None, features_path=None, seed=0,
                   device="cpu", chunk_images=256, progress=True):
    """For each order: fit a quantizer, save ``pq_<ds>_<order>.npz`` and ``codes_<ds>_<order>.h5``."""
    if train_set not in PQ_TRAIN_SETS:
        raise VQADataError(f"--pq_train_set must be one of {', '.join(PQ_TRAIN_SETS)}")
    files = dataset_files(data_dir, dataset)
    features_path = features_path or files["features"]
    num_classes = DEFAULT_NUM_CLASSES[dataset] if num_classes is None else num_classes
    train = load_questions(files["train"], ["iid", "qtypeidx", "aidx"])
    val = load_questions(files["val"], ["iid"])
    feat_attrs = load_h5_attrs(features_path)
    results = {}
    with h5py.File(features_path, "r") as f:
        if "features" not in f or f["features"].ndim != 4:
            raise VQADataError(f"{features_path}: expected a 'features' dataset (N, H, W, C)")
        feats = f["features"]
        iids = f["iids"][()]
        names = f["image_names"].asstr()[()]
        n_img, H, W, C = feats.shape
        image_index = image_index_from_iids(iids, features_path)
        _question_rows(val, image_index, "val")
        rng = np.random.default_rng(seed)
        for order in orders:
            out = dataset_files(data_dir, dataset, order)
            rows = pq_train_images(train, image_index, order, train_set, num_classes)
            max_images = max(1, math.ceil(max_train_vectors / (H * W)))
            if len(rows) > max_images:
                rows = np.sort(rng.choice(rows, size=max_images, replace=False))
            x = _read_rows(feats, rows).reshape(-1, C)
            if len(x) < 2 ** nbits:
                raise VQADataError(
                    f"{order}: the PQ training set has {len(rows)} images = {len(x)} vectors, "
                    f"fewer than 2**nbits = {2 ** nbits}; use more (or larger) images, "
                    f"--pq_train_set base_init or a smaller --nbits")
            pq = ProductQuantizer(C, num_codebooks, nbits).fit(x, seed=seed).to(device)
            del x
            pq.save(out["pq"])
            with atomic_h5(out["codes"]) as g:
                codes = g.create_dataset("codes", shape=(n_img, H, W, num_codebooks),
                                         dtype=np.uint8, chunks=(min(n_img, 1024), H, W,
                                                                 num_codebooks))
                g.create_dataset("iids", data=iids)
                put_strings(g, "image_names", names)
                set_attrs(g, {"dataset": dataset, "order": order, "pq_train_set": train_set,
                              "pq_file": os.path.basename(out["pq"]),
                              "num_train_images": len(rows),
                              "num_train_vectors": len(rows) * H * W,
                              "feature_shape": np.asarray([H, W, C], dtype=np.int64),
                              "num_codebooks": num_codebooks, "nbits": nbits,
                              **{k: feat_attrs[k] for k in ("arch", "layer", "image_size",
                                                            "weights") if k in feat_attrs}})
                for s in tqdm(range(0, n_img, chunk_images), desc=f"PQ codes ({order})",
                              unit="chunk", disable=not progress):
                    block = torch.from_numpy(feats[s:s + chunk_images]).to(device)
                    codes[s:s + len(block)] = pq.encode(block).cpu().numpy()
            results[order] = {"num_train_images": len(rows), "codes": out["codes"],
                              "pq": out["pq"]}
    return results
