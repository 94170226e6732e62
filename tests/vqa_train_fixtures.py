"""Tiny *prepared* CLEVR- and TDIUC-format data (DATA_FORMATS.md sections 2-4 and 6), written
directly, for fast trainer tests: LUT, dictionary, embedding init, question tables, PQ codes and
quantizer. Answers depend on the image so that a model can learn something.
"""
import json
import os
import warnings

import h5py
import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import remind  # noqa: F401
from remind.quantizer import ProductQuantizer
from vqa_experiments.vqa_data import quantizer_digest

WORDS = ["what", "is", "the", "color", "of", "thing", "how", "many", "are", "there", "cube", "sphere",
         "left", "big", "small", "any"]


def _write_h5_table(path, rows, seq_len, pad):
    n = len(rows["qid"])
    with h5py.File(path, "w") as f:
        s = h5py.string_dtype("utf-8")
        f.create_dataset("qid", data=np.asarray(rows["qid"], dtype=np.int64))
        f.create_dataset("iid", data=np.asarray(rows["iid"], dtype=np.int64))
        f.create_dataset("q", data=np.asarray(rows["q"], dtype=object), dtype=s)
        f.create_dataset("a", data=np.asarray(rows["a"], dtype=object), dtype=s)
        f.create_dataset("qtype", data=np.asarray(rows["qtype"], dtype=object), dtype=s)
        aidx = np.asarray(rows["aidx"], dtype=np.int32)
        f.create_dataset("aidx", data=aidx)
        f.create_dataset("ten_aidx", data=np.repeat(aidx[:, None], 10, axis=1))
        f.create_dataset("atypeidx", data=np.zeros(n, dtype=np.int32))
        f.create_dataset("qtypeidx", data=np.asarray(rows["qtypeidx"], dtype=np.int32))
        f.create_dataset("qseq", data=np.asarray(rows["qseq"], dtype=np.int64))
        f.create_dataset("qlen", data=np.asarray(rows["qlen"], dtype=np.int64))
        f.attrs["seq_len"] = seq_len
        f.attrs["pad_index"] = pad
        f.attrs["format_version"] = 1


def make_prepared(out_dir, dataset="clevr", orders=("qtype", "iid"), n_types=5, n_answers=8,
                  n_train=150, n_val=40, n_images=24, map_hw=(4, 4), feat_dim=16, num_codebooks=4,
                  seq_len=12, seed=0, type_counts=None):
    """Write the prepared files of ``dataset`` into ``out_dir``; returns ``out_dir``."""
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    idx2word = WORDS + ["<unk>"]
    ntoken = len(idx2word)
    with open(os.path.join(out_dir, f"dictionary_{dataset}.json"), "w") as f:
        json.dump({"idx2word": idx2word, "unk_token": "<unk>", "unk_index": ntoken - 1, "ntoken": ntoken,
                   "pad_index": ntoken, "seq_len": seq_len, "source_splits": ["train"]}, f)
    answers = [f"ans{i}" for i in range(n_answers)]
    types = [f"type{i}" for i in range(n_types)]
    with open(os.path.join(out_dir, f"LUT_{dataset}.json"), "w") as f:
        json.dump({"a2idx": {a: i for i, a in enumerate(answers)}, "atype2idx": {"answer_type": 0},
                   "qtype2idx": {t: i for i, t in enumerate(types)}}, f)
    np.save(os.path.join(out_dir, f"embedding_init_300d_{dataset}.npy"),
            rng.normal(0, 0.33, size=(ntoken, 300)).astype(np.float32))
    # Images: each has a latent class; its answer for a question type is a function of both.
    image_class = rng.integers(0, n_answers, size=n_images)
    iids = np.arange(n_images, dtype=np.int64) + 1000
    n_train_images = n_images * 3 // 4

    def table(n, split, qid_base):
        if split == "train" and type_counts is not None:
            qtypes = np.concatenate([np.full(c, t) for t, c in enumerate(type_counts)])
            rng.shuffle(qtypes)
            n = len(qtypes)
        else:
            qtypes = np.arange(n) % n_types
            rng.shuffle(qtypes)
        img = rng.integers(0, n_train_images, size=n) if split == "train" else \
            rng.integers(n_train_images, n_images, size=n)
        rows = {k: [] for k in ("qid", "iid", "q", "a", "qtype", "aidx", "qtypeidx", "qseq", "qlen")}
        for i in range(n):
            t = int(qtypes[i])
            length = int(rng.integers(2, seq_len))
            toks = [t % len(WORDS)] + rng.integers(0, len(WORDS), size=length - 1).tolist()
            a = int((image_class[img[i]] + t) % n_answers)
            rows["qid"].append(qid_base + i)
            rows["iid"].append(int(iids[img[i]]))
            rows["q"].append(" ".join(idx2word[k] for k in toks) + "?")
            rows["a"].append(answers[a])
            rows["qtype"].append(types[t])
            rows["aidx"].append(a)
            rows["qtypeidx"].append(t)
            rows["qseq"].append(toks + [ntoken] * (seq_len - length))
            rows["qlen"].append(length)
        return rows

    _write_h5_table(os.path.join(out_dir, f"train_{dataset}.h5"), table(n_train, "train", 0), seq_len, ntoken)
    _write_h5_table(os.path.join(out_dir, f"val_{dataset}.h5"), table(n_val, "val", 0), seq_len, ntoken)
    # Features: a class prototype per image plus noise, quantized with a quantizer fitted here.
    h, w = map_hw
    protos = rng.normal(0, 1, size=(n_answers, feat_dim))
    feats = protos[image_class][:, None, None, :] + 0.3 * rng.normal(0, 1, size=(n_images, h, w, feat_dim))
    feats = feats.astype(np.float32)
    for order in orders:
        pq = ProductQuantizer(feat_dim, num_codebooks=num_codebooks, nbits=8)
        x = feats.reshape(-1, feat_dim)
        if len(x) < 256:
            x = np.concatenate([x] * (256 // len(x) + 1)) + 0.01 * rng.normal(size=(len(x) * (256 // len(x) + 1), feat_dim))
        with warnings.catch_warnings():  # tiny data: fewer training vectors than faiss suggests
            warnings.simplefilter("ignore")
            pq.fit(x.astype(np.float32), seed=seed)
        codes = pq.encode(torch.from_numpy(feats)).numpy()
        pq.save(os.path.join(out_dir, f"pq_{dataset}_{order}.npz"))
        with h5py.File(os.path.join(out_dir, f"codes_{dataset}_{order}.h5"), "w") as f:
            f.create_dataset("codes", data=codes.astype(np.uint8))
            f.create_dataset("iids", data=iids)
            f.create_dataset("image_names", data=np.asarray([f"img{i}.png" for i in range(n_images)], dtype=object),
                             dtype=h5py.string_dtype("utf-8"))
            f.attrs["order"] = order
            f.attrs["pq_file"] = f"pq_{dataset}_{order}.npz"
            f.attrs["pq_sha256"] = quantizer_digest(pq)
    return out_dir
