"""The trainer's data: question tables in memory (train rows in streaming order), the image codes
and the product quantizer on the device; PQ codes are decoded on the fly for every batch."""
import numpy as np
import torch

from vqa_experiments.stream_order import stream_boundaries, stream_order
from vqa_experiments.training.config import TrainerError
from vqa_experiments.vqa_data import (check_codes_match_quantizer, dataset_files, load_codes, load_dictionary,
                                      load_h5_attrs, load_lut, load_pq, load_questions)

FILE_KEYS = ("train", "val", "codes", "pq", "dictionary", "lut", "embedding")
COLUMNS = ("qid", "iid", "aidx", "qtypeidx", "qseq", "qlen")


def resolve_files(args, dataset):
    """Standard file names in ``--data_dir``, each replaced by its ``--<key>_file`` when given."""
    files = dataset_files(args.data_dir or ".", dataset, order=args.data_order)
    for key in FILE_KEYS:
        override = getattr(args, f"{key}_file", None)
        if override:
            files[key] = override
        elif not args.data_dir:
            raise TrainerError(f"--data_dir is required (or give --{key}_file)")
    return files


def select_train_rows(train, cfg, num_classes, path, log):
    """The reference's training rows: the first int(N * data_subset) rows of the file, then
    ('valid') those whose answer is inside the classifier. Returns (rows, number dropped)."""
    n_file = len(train["qid"])
    n_keep = int(n_file * cfg["data_subset"])
    if n_keep < n_file:
        train = {k: v[:n_keep] for k, v in train.items()}
        log(f"data_subset {cfg['data_subset']}: the first {n_keep} of {n_file} train questions")
    aidx = train["aidx"].astype(np.int64)
    if cfg["train_on"] == "valid":
        keep = (aidx >= 0) & (aidx < num_classes)
    else:
        keep = np.ones(len(aidx), dtype=bool)
        if len(aidx) and (aidx.min() < 0 or aidx.max() >= num_classes):
            raise TrainerError(f"{path}: train_on 'full' needs every answer index in "
                               f"[0, {num_classes}); use train_on 'valid'")
    if not keep.any():
        raise TrainerError(f"{path}: no training question has an answer index in [0, {num_classes})")
    return {k: v[keep] for k, v in train.items()}, int((~keep).sum())


def check_table_matches_lut(table, lut, path, lut_path):
    """Every answer and type index of a question table must lie in the answer/type table (-1:
    unknown); else the tables come from different preprocessing runs."""
    for column, key, what in (("aidx", "a2idx", "answer"), ("qtypeidx", "qtype2idx", "question type")):
        values, size = table[column], len(lut[key])
        if len(values) and (values.min() < -1 or values.max() >= size):
            bad = int(values.max() if values.max() >= size else values.min())
            raise TrainerError(f"{path}: {what} index {bad} is outside the {size} entries of {key} in {lut_path}; "
                               f"the question table and the answer/type table come from different data")


class VQAStreamData:
    """Question tables in memory (train rows in streaming order), image codes + PQ on the device."""

    def __init__(self, args, cfg, device, log):
        self.files = files = resolve_files(args, cfg["dataset"])
        self.device = device
        self.lut = load_lut(files["lut"])
        self.dictionary = load_dictionary(files["dictionary"])
        self.num_classes = cfg["num_classes"] or len(self.lut["a2idx"])
        self.num_types = cfg["num_types"] or len(self.lut["qtype2idx"])
        self.type_names = list(self.lut["idx2qtype"])
        train = load_questions(files["train"], columns=COLUMNS)
        val = load_questions(files["val"], columns=COLUMNS)
        for name, table in (("train", train), ("val", val)):
            check_table_matches_lut(table, self.lut, files[name], files["lut"])
        codes, image_index = self._load_codes(cfg)
        train, dropped = select_train_rows(train, cfg, self.num_classes, files["train"], log)
        order = stream_order(train["qtypeidx"], args.data_order)
        train = {k: v[order] for k, v in train.items()}
        if cfg["test_on"] == "valid":
            vkeep = (val["aidx"] >= 0) & (val["aidx"] < self.num_classes)
            val = {k: v[vkeep] for k, v in val.items()}
        if len(val["qid"]) == 0:
            raise TrainerError(f"{files['val']}: no validation questions")
        self.boundaries = stream_boundaries(train["qtypeidx"], args.data_order)
        self.num_train, self.num_val = len(train["qid"]), len(val["qid"])
        self.codes = torch.from_numpy(np.ascontiguousarray(codes.reshape(len(codes), -1, codes.shape[-1]))).to(device)
        self.split = {name: self._tensors(table, image_index, files[name], files["codes"])
                      for name, table in (("train", train), ("val", val))}
        self.train_answers = train["aidx"].astype(np.int64)  # on the host: a step's label without a sync
        self.val_qid = val["qid"].astype(np.int64)
        self.val_aidx = val["aidx"].astype(np.int64)
        self.val_qtype = val["qtypeidx"].astype(np.int64)
        self.imnorm = bool(cfg["imnorm"])
        log(f"data: {self.num_train} train questions ({dropped} dropped: answer outside the "
            f"{self.num_classes} classes), {self.num_val} val questions, {len(self.codes)} images of "
            f"{self.map_shape[0]}x{self.map_shape[1]}x{self.feat_dim} as {self.pq.M}-byte PQ codes")

    def _load_codes(self, cfg):
        files = self.files
        codes, image_index = load_codes(files["codes"])
        self.pq = load_pq(files["pq"], device=self.device)
        check_codes_match_quantizer(files["codes"], codes, load_h5_attrs(files["codes"]), self.pq, files["pq"])
        self.map_shape = tuple(int(s) for s in codes.shape[1:3])
        self.feat_dim = int(self.pq.d)
        if cfg["model"] == "s_mac" and self.map_shape[0] != self.map_shape[1]:
            raise TrainerError(f"{files['codes']}: S-MAC needs square feature maps, got {self.map_shape}")
        return codes, image_index

    def _tensors(self, table, image_index, path, codes_path):
        qseq = table["qseq"].astype(np.int64)
        qlen = table["qlen"].astype(np.int64)
        seq_len, pad = self.dictionary.seq_len, self.dictionary.pad_index
        if qseq.ndim != 2 or qseq.shape[1] != seq_len:
            raise TrainerError(f"{path}: qseq has shape {qseq.shape}, expected (N, {seq_len}) from the dictionary")
        if len(qseq) and (qseq.min() < 0 or qseq.max() > pad):
            raise TrainerError(f"{path}: qseq holds token ids outside [0, {pad}] of the dictionary")
        if len(qlen) and (qlen.min() < 1 or qlen.max() > seq_len - 1):
            raise TrainerError(f"{path}: qlen must lie in [1, {seq_len - 1}]")
        rows = np.fromiter((image_index.get(int(i), -1) for i in table["iid"]), dtype=np.int64, count=len(qseq))
        if (rows < 0).any():
            missing = int(table["iid"][np.flatnonzero(rows < 0)[0]])
            raise TrainerError(f"{codes_path}: no codes for image id {missing} used by {path} "
                               f"({int((rows < 0).sum())} questions affected)")
        return {"q": torch.from_numpy(qseq).to(self.device),
                "ql": torch.from_numpy(qlen),  # lengths stay on the CPU (packing needs them there)
                "y": torch.from_numpy(table["aidx"].astype(np.int64)).to(self.device),
                "img": torch.from_numpy(rows).to(self.device)}

    def features(self, img_rows):
        v = self.pq.decode(self.codes[img_rows])               # [B, H*W, C] float32
        if self.imnorm:
            v = v / (v.norm(dim=2, keepdim=True) + 1e-8)
        return v

    def inputs(self, split, idx):
        """The network's inputs (q, v, ql) for row indices ``idx`` (CPU LongTensor) of a split."""
        s = self.split[split]
        dev_idx = idx.to(self.device)
        return s["q"][dev_idx], self.features(s["img"][dev_idx]), s["ql"][idx]

    def labels(self, split, idx):
        """The answer indices of rows ``idx``, on the device."""
        return self.split[split]["y"][idx.to(self.device)]

    def train_labels(self, start, stop):
        return self.split["train"]["y"][start:stop].cpu()
