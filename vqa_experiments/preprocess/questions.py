"""Answer/type tables, the word dictionary, the embedding init and the per-split question tables.

Shared by CLEVR and TDIUC: a dataset reader turns its raw JSON into ``QuestionRecords`` per split
and ``prepare_questions`` writes every file of DATA_FORMATS.md sections 2-4.
"""
import collections
import dataclasses
import os

import numpy as np

from remind.runtime import write_json
from vqa_experiments.preprocess.io import atomic_h5, put_strings, set_attrs, warn, write_npy
from vqa_experiments.vqa_data import (DEFAULT_SEQ_LEN, EMBEDDING_DIM, FORMAT_VERSION, UNK_TOKEN,
                                      Dictionary, VQADataError, dataset_files, tokenize)

RANDOM_EMBEDDING_STD = 0.33  # the scale of GloVe 6B 300d entries


@dataclasses.dataclass
class QuestionRecords:
    """One split's questions as parallel lists, in the reference's row order."""
    qid: list
    iid: list
    question: list
    answer: list
    qtype: list

    def __len__(self):
        return len(self.qid)


def frequency_ranked(values):
    """``{value: rank}`` by descending count, ties in first-seen order (``Counter.most_common``)."""
    return {v: i for i, (v, _) in enumerate(collections.Counter(values).most_common())}


def build_lut(train):
    return {"a2idx": frequency_ranked(train.answer), "atype2idx": {"answer_type": 0},
            "qtype2idx": frequency_ranked(train.qtype)}


def build_dictionary(question_lists, seq_len, source_splits):
    """Tokens in first-seen order over the given question lists, then ``<unk>``."""
    seen = {}
    for questions in question_lists:
        for q in questions:
            for w in tokenize(q):
                if w not in seen:
                    seen[w] = len(seen)
    words = list(seen)
    if UNK_TOKEN not in seen:
        words.append(UNK_TOKEN)
    return Dictionary(words, seq_len, UNK_TOKEN, source_splits)


def read_glove(path, words, dim):
    """``{word: vector}`` for the words of ``words`` found in a GloVe text file."""
    if not os.path.isfile(path):
        raise VQADataError(f"GloVe file not found: {path}")
    wanted, found = set(words), {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            word, _, rest = line.rstrip("\n").partition(" ")
            if word not in wanted or word in found:
                continue
            values = rest.split(" ")
            if len(values) != dim:
                raise VQADataError(f"{path}:{lineno}: expected {dim} values after the word, "
                                   f"got {len(values)}")
            try:
                found[word] = np.asarray(values, dtype=np.float32)
            except ValueError:
                raise VQADataError(f"{path}:{lineno}: non-numeric vector entry") from None
    return found


def embedding_init(dictionary, glove_path=None, dim=EMBEDDING_DIM, seed=0):
    """float32 ``(ntoken, dim)`` and a description of its source."""
    if glove_path:
        vectors = read_glove(glove_path, dictionary.idx2word, dim)
        emb = np.zeros((dictionary.ntoken, dim), dtype=np.float32)
        for i, w in enumerate(dictionary.idx2word):
            if w in vectors:
                emb[i] = vectors[w]
        return emb, {"source": "glove", "file": os.path.basename(glove_path),
                     "tokens_found": len(vectors), "tokens_zero": dictionary.ntoken - len(vectors)}
    rng = np.random.default_rng(seed)
    emb = rng.normal(0.0, RANDOM_EMBEDDING_STD, size=(dictionary.ntoken, dim)).astype(np.float32)
    return emb, {"source": "random_normal", "std": RANDOM_EMBEDDING_STD, "seed": seed}


def encode_questions(dictionary, questions):
    """``(qseq int64 (N, L), qlen int64 (N,), stats)``; over-long questions are truncated."""
    n, L = len(questions), dictionary.seq_len
    qseq = np.full((n, L), dictionary.pad_index, dtype=np.int64)
    qlen = np.zeros(n, dtype=np.int64)
    truncated = unknown = with_unknown = 0
    for r, q in enumerate(questions):
        ids, n_unk, trunc = dictionary.encode(q)
        qseq[r, :len(ids)] = ids
        qlen[r] = len(ids)
        truncated += trunc
        unknown += n_unk
        with_unknown += n_unk > 0
    return qseq, qlen, {"num_truncated": truncated, "num_unknown_tokens": unknown,
                        "num_questions_with_unknown": with_unknown}


def write_question_table(path, dataset, split, records, lut, dictionary):
    """Write ``{split}_{dataset}.h5`` (DATA_FORMATS.md section 4); returns its statistics."""
    qseq, qlen, stats = encode_questions(dictionary, records.question)
    n, L = len(records), dictionary.seq_len
    if stats["num_truncated"]:
        warn(f"{split}: {stats['num_truncated']} of {n} questions had more than {L - 1} tokens "
             f"and were truncated")
    if stats["num_unknown_tokens"]:
        warn(f"{split}: {stats['num_unknown_tokens']} unknown words in "
             f"{stats['num_questions_with_unknown']} questions were mapped to {UNK_TOKEN}")
    aidx = np.asarray([lut["a2idx"].get(a, -1) for a in records.answer], dtype=np.int32)
    qtypeidx = np.asarray([lut["qtype2idx"].get(t, -1) for t in records.qtype], dtype=np.int32)
    stats["num_unknown_answers"] = int((aidx < 0).sum())
    stats["num_unknown_qtypes"] = int((qtypeidx < 0).sum())
    with atomic_h5(path) as f:
        f.create_dataset("qid", data=np.asarray(records.qid, dtype=np.int64))
        f.create_dataset("iid", data=np.asarray(records.iid, dtype=np.int64))
        put_strings(f, "q", records.question)
        put_strings(f, "a", records.answer)
        put_strings(f, "qtype", records.qtype)
        f.create_dataset("aidx", data=aidx)
        f.create_dataset("ten_aidx", data=np.repeat(aidx[:, None], 10, axis=1))
        f.create_dataset("atypeidx", data=np.zeros(n, dtype=np.int32))
        f.create_dataset("qtypeidx", data=qtypeidx)
        f.create_dataset("qseq", data=qseq, chunks=(min(max(n, 1), 65536), L))
        f.create_dataset("qlen", data=qlen)
        set_attrs(f, {"dataset": dataset, "split": split, "seq_len": L,
                      "ntoken": dictionary.ntoken, "pad_index": dictionary.pad_index,
                      "unk_index": dictionary.unk_index, "num_questions": n,
                      "format_version": FORMAT_VERSION, **stats})
    return stats


def prepare_questions(dataset, splits, out_dir, seq_len, dictionary_splits, glove=None,
                      embedding_seed=0):
    """Write the LUT, dictionary, embedding init, one table per split and a summary.

    ``splits``: ``{"train": QuestionRecords, "val": QuestionRecords}``.
    """
    for name in dictionary_splits:
        if name not in splits:
            raise VQADataError(f"--dictionary_splits names {name!r}, which is not a split "
                               f"({', '.join(splits)})")
    if len(splits["train"]) == 0:
        raise VQADataError(f"{dataset}: the train split has no questions")
    files = dataset_files(out_dir, dataset)
    lut = build_lut(splits["train"])
    dictionary = build_dictionary([splits[s].question for s in dictionary_splits], seq_len,
                                  list(dictionary_splits))
    emb, emb_info = embedding_init(dictionary, glove, seed=embedding_seed)
    summary = {"dataset": dataset, "ntoken": dictionary.ntoken, "seq_len": seq_len,
               "num_answers": len(lut["a2idx"]), "num_qtypes": len(lut["qtype2idx"]),
               "embedding_source": emb_info, "splits": {}}
    for split, records in splits.items():
        stats = write_question_table(files[split], dataset, split, records, lut, dictionary)
        summary["splits"][split] = {"num_questions": len(records), **stats}
    write_json(files["lut"], lut)
    write_json(files["dictionary"], dictionary.to_json())
    write_npy(files["embedding"], emb)
    write_json(files["summary"], summary)
    return summary


def add_question_args(parser, dataset, default_dictionary_splits):
    parser.add_argument("--data_root", required=True,
                        help=f"the raw {dataset.upper()} folder")
    parser.add_argument("--out_dir", default=None,
                        help="where to write the prepared files (default: --data_root)")
    parser.add_argument("--seq_len", type=int, default=DEFAULT_SEQ_LEN[dataset],
                        help="question tensor length L; at most L-1 tokens are kept")
    parser.add_argument("--dictionary_splits", default=default_dictionary_splits,
                        help="comma-separated splits whose questions make the dictionary")
    parser.add_argument("--glove", default=None,
                        help="GloVe text file (glove.6B.300d.txt) for the embedding init; "
                             "without it a seeded N(0, 0.33^2) init is written")
    parser.add_argument("--embedding_seed", type=int, default=0)


def run_question_preprocessing(args, dataset, reader, splits):
    if args.seq_len < 2:
        raise VQADataError(f"--seq_len must be at least 2, got {args.seq_len}")
    records = {s: reader(args.data_root, s) for s in splits}
    out_dir = args.out_dir or args.data_root
    summary = prepare_questions(dataset, records, out_dir, args.seq_len,
                                [s for s in args.dictionary_splits.split(",") if s],
                                args.glove, args.embedding_seed)
    counts = ", ".join(f"{s}: {v['num_questions']}" for s, v in summary["splits"].items())
    print(f"{dataset}: wrote question tables ({counts}), {summary['num_answers']} answers, "
          f"{summary['num_qtypes']} question types, {summary['ntoken']} tokens to {out_dir}")
    return summary
