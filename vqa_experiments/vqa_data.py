"""Readers for the prepared VQA data (formats in ``vqa_experiments/DATA_FORMATS.md``).

The trainer reads every prepared file through these functions. They raise ``VQADataError`` with a
one-line message naming the offending file; scripts turn it into one line on stderr (see
``remind.runtime.run_cli``).
"""
import json
import os

import remind  # noqa: F401  (must precede any torchvision import)
import h5py
import numpy as np
from remind.errors import InputError

FORMAT_VERSION = 1
UNK_TOKEN = "<unk>"
EMBEDDING_DIM = 300
DATASETS = ("clevr", "tdiuc")
ORDERS = ("iid", "qtype")
DEFAULT_SEQ_LEN = {"clevr": 45, "tdiuc": 30}


class VQADataError(InputError):
    """Bad or missing input data; the message is one line that names the file or flag."""


def dataset_files(data_dir, dataset, order=None):
    """Standard paths of every prepared file of ``dataset`` in ``data_dir``."""
    if dataset not in DATASETS:
        raise VQADataError(f"unknown dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    j = lambda name: os.path.join(data_dir, name)  # noqa: E731
    files = {
        "lut": j(f"LUT_{dataset}.json"),
        "dictionary": j(f"dictionary_{dataset}.json"),
        "embedding": j(f"embedding_init_300d_{dataset}.npy"),
        "train": j(f"train_{dataset}.h5"),
        "val": j(f"val_{dataset}.h5"),
        "summary": j(f"preprocess_{dataset}_summary.json"),
        "features": j(f"features_{dataset}.h5"),
    }
    if order is not None:
        if order not in ORDERS:
            raise VQADataError(f"unknown order {order!r} (expected one of {', '.join(ORDERS)})")
        files["pq"] = j(f"pq_{dataset}_{order}.npz")
        files["codes"] = j(f"codes_{dataset}_{order}.h5")
    return files


def require_file(path, what="file"):
    if not os.path.isfile(path):
        raise VQADataError(f"{what} not found: {path}")
    return path


def read_json(path, what="JSON file"):
    require_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VQADataError(f"{path}: not valid JSON ({err})") from None


def _open_h5(path, what):
    require_file(path, what)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise VQADataError(f"{path}: not a readable HDF5 file ({err})") from None


def _read_dataset(f, name, path):
    if name not in f:
        raise VQADataError(f"{path}: missing dataset {name!r}")
    dset = f[name]
    if h5py.check_string_dtype(dset.dtype) is not None:
        return np.array(dset.asstr()[()], dtype=object)
    return dset[()]


def _attr_value(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_attr_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_h5_attrs(path):
    """File-level attributes of any h5 written here, as plain Python values."""
    with _open_h5(path, "h5 file") as f:
        return {k: _attr_value(v) for k, v in f.attrs.items()}


QUESTION_COLUMNS = ("qid", "iid", "q", "a", "qtype", "aidx", "ten_aidx", "atypeidx", "qtypeidx",
                    "qseq", "qlen")


def load_questions(path, columns=None):
    """A question table as ``{column: numpy array}``; string columns hold Python ``str``."""
    columns = QUESTION_COLUMNS if columns is None else tuple(columns)
    with _open_h5(path, "question table") as f:
        return {name: _read_dataset(f, name, path) for name in columns}


def load_lut(path):
    """``a2idx``, ``atype2idx``, ``qtype2idx`` plus the derived lists ``idx2a``, ``idx2qtype``."""
    lut = read_json(path, "answer/type table")
    for key in ("a2idx", "atype2idx", "qtype2idx"):
        if not isinstance(lut.get(key), dict):
            raise VQADataError(f"{path}: missing or malformed {key!r}")
    out = {k: lut[k] for k in ("a2idx", "atype2idx", "qtype2idx")}
    out["idx2a"] = sorted(out["a2idx"], key=out["a2idx"].get)
    out["idx2qtype"] = sorted(out["qtype2idx"], key=out["qtype2idx"].get)
    return out


def tokenize(question):
    """The reference tokeniser: lowercase, drop ``,`` and ``?``, split ``'s``, split on spaces."""
    s = question.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    return s.split()


class Dictionary:
    """Word dictionary with an unknown token; ``pad_index == ntoken``."""

    def __init__(self, idx2word, seq_len, unk_token=UNK_TOKEN, source_splits=()):
        self.idx2word = list(idx2word)
        self.word2idx = {w: i for i, w in enumerate(self.idx2word)}
        if len(self.word2idx) != len(self.idx2word):
            raise VQADataError("dictionary has duplicate tokens")
        if unk_token not in self.word2idx:
            raise VQADataError(f"dictionary lacks the unknown token {unk_token!r}")
        if seq_len < 2:
            raise VQADataError(f"seq_len must be >= 2, got {seq_len}")
        self.unk_token = unk_token
        self.unk_index = self.word2idx[unk_token]
        self.seq_len = int(seq_len)
        self.source_splits = list(source_splits)

    @property
    def ntoken(self):
        return len(self.idx2word)

    @property
    def pad_index(self):
        return self.ntoken

    tokenize = staticmethod(tokenize)

    def encode(self, question):
        """``(ids, num_unknown, truncated)``: at most ``seq_len - 1`` ids, never empty."""
        words = tokenize(question)
        truncated = len(words) > self.seq_len - 1
        words = words[: self.seq_len - 1]
        ids = [self.word2idx.get(w, self.unk_index) for w in words]
        num_unknown = sum(1 for w in words if w not in self.word2idx)
        if not ids:
            ids, num_unknown = [self.unk_index], 1
        return ids, num_unknown, truncated

    def to_json(self):
        return {"idx2word": self.idx2word, "unk_token": self.unk_token,
                "unk_index": self.unk_index, "ntoken": self.ntoken, "pad_index": self.pad_index,
                "seq_len": self.seq_len, "source_splits": self.source_splits}


def load_dictionary(path):
    obj = read_json(path, "dictionary")
    try:
        d = Dictionary(obj["idx2word"], obj["seq_len"], obj.get("unk_token", UNK_TOKEN),
                       obj.get("source_splits", ()))
    except (KeyError, TypeError) as err:
        raise VQADataError(f"{path}: malformed dictionary ({err})") from None
    except VQADataError as err:
        raise VQADataError(f"{path}: {err}") from None
    return d


def load_embedding_init(path, ntoken=None):
    """float32 ``(ntoken, 300)``; checks the row count when ``ntoken`` is given."""
    require_file(path, "embedding init")
    try:
        emb = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise VQADataError(f"{path}: not a numpy array file ({err})") from None
    if emb.ndim != 2 or (ntoken is not None and emb.shape[0] != ntoken):
        want = f"({ntoken}, D)" if ntoken is not None else "2-D"
        raise VQADataError(f"{path}: embedding shape {emb.shape}, expected {want}")
    return emb.astype(np.float32, copy=False)


def embedding_rows_for(emb, dictionary, path):
    """``(matrix (ntoken, D), padded)`` for ``dictionary``: a matrix with one row fewer (the
    reference's shipped GloVe matrices, made for its dictionary without ``<unk>``) gets a zero
    ``<unk>`` row, as our GloVe-built init gives ``<unk>`` (a token absent from GloVe is zero)."""
    ntoken = dictionary.ntoken
    if emb.ndim == 2 and emb.shape[0] == ntoken:
        return emb, False
    if emb.ndim == 2 and emb.shape[0] == ntoken - 1 and dictionary.unk_index == ntoken - 1:
        return np.concatenate([emb, np.zeros((1, emb.shape[1]), dtype=emb.dtype)]), True
    raise VQADataError(f"{path}: embedding shape {emb.shape}, expected ({ntoken}, D) for the dictionary's "
                       f"{ntoken} tokens (or ({ntoken - 1}, D): the same without the {dictionary.unk_token} row)")


def load_features(path):
    """``(features float32 (N, H, W, C), iids int64 (N,), image_names)`` of a features h5."""
    with _open_h5(path, "features file") as f:
        return (_read_dataset(f, "features", path), _read_dataset(f, "iids", path),
                _read_dataset(f, "image_names", path))


def image_index_from_iids(iids, path="image table"):
    index = {int(i): r for r, i in enumerate(np.asarray(iids).tolist())}
    if len(index) != len(iids):
        raise VQADataError(f"{path}: duplicate image ids")
    return index


def load_codes(path):
    """``(codes uint8 (N_img, H, W, M), {iid: row})`` of a codes h5."""
    with _open_h5(path, "codes file") as f:
        codes = _read_dataset(f, "codes", path)
        iids = _read_dataset(f, "iids", path)
    if codes.dtype != np.uint8 or codes.ndim != 4 or len(codes) != len(iids):
        raise VQADataError(f"{path}: codes must be uint8 (N, H, W, M) with one iid per row, "
                           f"got {codes.dtype} {codes.shape} and {len(iids)} iids")
    return codes, image_index_from_iids(iids, path)


def load_pq(path, device="cpu"):
    """The fitted ``remind.quantizer.ProductQuantizer`` saved beside a codes file."""
    from remind.quantizer import ProductQuantizer
    require_file(path, "PQ file")
    try:
        return ProductQuantizer.load(path, device=device)
    except (OSError, KeyError, ValueError) as err:
        raise VQADataError(f"{path}: cannot load the product quantizer ({err})") from None


def quantizer_digest(pq):
    """SHA-256 of a quantizer's centroid table: the codes file records the one it was made with
    (attribute ``pq_sha256``), so codes are never decoded with another quantizer."""
    import hashlib

    cents = np.ascontiguousarray(pq.centroids.detach().cpu().numpy(), dtype=np.float32)
    return hashlib.sha256(cents.tobytes()).hexdigest()


def check_codes_match_quantizer(codes_path, codes, attrs, pq, pq_path):
    """Raise ``VQADataError`` when the codes file was made for another quantizer: another number
    of sub-codes, feature size or bits, or (files that record it) another centroid table."""
    if codes.shape[-1] != pq.M:
        raise VQADataError(f"{codes_path}: codes have {codes.shape[-1]} sub-codes but the quantizer "
                           f"{pq_path} has {pq.M} codebooks")
    shape = attrs.get("feature_shape")
    if shape is not None and int(list(shape)[-1]) != pq.d:
        raise VQADataError(f"{codes_path}: codes of {int(list(shape)[-1])}-channel features, but the quantizer "
                           f"{pq_path} is for {pq.d} channels; the codes were made for another quantizer")
    if attrs.get("nbits") is not None and int(attrs["nbits"]) != pq.nbits:
        raise VQADataError(f"{codes_path}: codes of {int(attrs['nbits'])}-bit codebooks, but the quantizer "
                           f"{pq_path} has {pq.nbits}-bit codebooks")
    digest = attrs.get("pq_sha256")
    if digest is not None and digest != quantizer_digest(pq):
        made = f" ({attrs['pq_file']})" if attrs.get("pq_file") else ""
        raise VQADataError(f"{codes_path}: codes made with another quantizer{made} than {pq_path} "
                           f"(centroid checksum differs); use the quantizer saved with these codes")


def decode_features(pq, codes):
    """uint8 codes ``(B, H, W, M)`` -> float32 ``(B, H*W, C)`` on the codes' device."""
    rec = pq.decode(codes)
    return rec.reshape(rec.shape[0], -1, rec.shape[-1])
