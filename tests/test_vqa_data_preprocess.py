"""Question preprocessing for CLEVR and TDIUC, run by command line on generated data."""
import collections
import os

import numpy as np
import pytest

import vqa_fixtures as fx
from vqa_experiments.preprocess import clevr, tdiuc
from vqa_experiments.vqa_data import (UNK_TOKEN, dataset_files, load_dictionary,
                                      load_embedding_init, load_h5_attrs, load_lut,
                                      load_questions, tokenize)


@pytest.fixture(scope="module")
def clevr_prepared(tmp_path_factory):
    root = fx.make_clevr(str(tmp_path_factory.mktemp("clevr")))
    out = os.path.join(root, "prepared")
    proc = fx.run_vqa_main("preprocess_clevr.py", "--data_root", root, "--out_dir", out)
    return root, out, proc


@pytest.fixture(scope="module")
def tdiuc_prepared(tmp_path_factory):
    root = fx.make_tdiuc(str(tmp_path_factory.mktemp("tdiuc")))
    proc = fx.run_vqa_main("preprocess_tdiuc.py", "--data_root", root)  # out_dir defaults to the root
    return root, root, proc


def test_clevr_tables_follow_the_reference(clevr_prepared):
    root, out, proc = clevr_prepared
    files = dataset_files(out, "clevr")
    lut = load_lut(files["lut"])
    assert lut["idx2qtype"] == ["query_attribute", "count", "compare_attribute", "exist",
                                "compare_integer"]
    assert lut["atype2idx"] == {"answer_type": 0}
    raw = fx.read_json(clevr.questions_path(root, "train"))["questions"]
    counts = collections.Counter(q["answer"] for q in raw)
    ranked = [a for a, _ in counts.most_common()]
    assert lut["idx2a"] == ranked  # frequency rank, ties in first-seen order
    train = load_questions(files["train"])
    assert len(train["qid"]) == len(raw)
    assert train["qid"].tolist() == [q["question_index"] for q in raw]
    assert train["iid"].tolist() == [int("1" + str(q["image_index"])) for q in raw]
    assert train["aidx"].tolist() == [lut["a2idx"][q["answer"]] for q in raw]
    assert (train["ten_aidx"] == train["aidx"][:, None]).all()
    assert set(train["qtypeidx"].tolist()) == set(range(5))
    assert train["qtype"][0] == clevr.FUNCTION_TO_QTYPE[raw[0]["program"][-1]["function"]]
    val = load_questions(files["val"])
    assert val["iid"].min() >= 20 and str(val["iid"][0]).startswith("2")
    assert set(val["qtypeidx"].tolist()) == set(range(5))


def test_dictionary_tokenisation_and_strings(clevr_prepared):
    root, out, _ = clevr_prepared
    files = dataset_files(out, "clevr")
    d = load_dictionary(files["dictionary"])
    raw = fx.read_json(clevr.questions_path(root, "train"))["questions"]
    first_seen = list(dict.fromkeys(w for q in raw for w in tokenize(q["question"])))
    assert d.idx2word == first_seen + [UNK_TOKEN]
    assert d.unk_index == d.ntoken - 1 and d.pad_index == d.ntoken and d.seq_len == 45
    assert any(w.endswith(";") for w in d.idx2word)  # punctuation other than , ? stays glued
    train = load_questions(files["train"])
    assert isinstance(train["q"][0], str) and isinstance(train["a"][0], str)
    assert isinstance(train["qtype"][0], str)
    q0 = raw[0]["question"]
    assert train["q"][0] == q0
    ids = [d.word2idx[w] for w in tokenize(q0)]
    assert train["qlen"][0] == len(ids)
    assert train["qseq"][0, :len(ids)].tolist() == ids
    assert (train["qseq"][0, len(ids):] == d.pad_index).all()
    assert train["qseq"].dtype == np.int64 and train["qseq"].shape[1] == 45
    assert tokenize("What color is the man's shirt, left?") == \
        ["what", "color", "is", "the", "man", "'s", "shirt", "left"]


def test_truncation_and_unknown_words_are_counted(clevr_prepared):
    _, out, proc = clevr_prepared
    files = dataset_files(out, "clevr")
    assert "warning: train: 1 of 100 questions had more than 44 tokens and were truncated" \
        in proc.stderr
    assert f"warning: val: 1 unknown words in 1 questions were mapped to {UNK_TOKEN}" in proc.stderr
    train_attrs, val_attrs = load_h5_attrs(files["train"]), load_h5_attrs(files["val"])
    assert train_attrs["num_truncated"] == 1 and val_attrs["num_truncated"] == 0
    assert val_attrs["num_unknown_tokens"] == 1 and train_attrs["num_unknown_tokens"] == 0
    train, val = load_questions(files["train"]), load_questions(files["val"])
    d = load_dictionary(files["dictionary"])
    long_row = int(np.argmax(train["qlen"]))
    assert train["qlen"][long_row] == 44 and len(tokenize(train["q"][long_row])) == \
        fx.LONG_QUESTION_TOKENS
    assert (train["qseq"][long_row, :44] != d.pad_index).all()
    assert fx.UNKNOWN_WORD in val["q"][0]
    pos = tokenize(val["q"][0]).index(fx.UNKNOWN_WORD)
    assert val["qseq"][0, pos] == d.unk_index
    assert (train["qlen"] >= 1).all() and (val["qlen"] <= 44).all()


def test_tdiuc_tables_follow_annotation_order(tdiuc_prepared):
    root, out, proc = tdiuc_prepared
    files = dataset_files(out, "tdiuc")
    lut = load_lut(files["lut"])
    assert lut["idx2qtype"] == list(tdiuc.QTYPES)  # the real data's rank order
    anns = fx.read_json(tdiuc.annotations_path(root, "train"))["annotations"]
    qs = {q["question_id"]: q["question"] for q in
          fx.read_json(tdiuc.questions_path(root, "train"))["questions"]}
    train = load_questions(files["train"])
    assert train["qid"].tolist() == [a["question_id"] for a in anns]
    assert train["iid"].tolist() == [a["image_id"] for a in anns]
    assert train["q"].tolist() == [qs[a["question_id"]] for a in anns]
    assert train["a"].tolist() == [a["answers"][0]["answer"] for a in anns]
    assert train["qtypeidx"].tolist() == [lut["qtype2idx"][a["question_type"]] for a in anns]
    val = load_questions(files["val"])
    assert set(val["qtypeidx"].tolist()) == set(range(12))
    d = load_dictionary(files["dictionary"])
    assert d.source_splits == ["train", "val"] and fx.UNKNOWN_WORD in d.word2idx  # as reference
    assert d.seq_len == 30 and train["qseq"].shape == (len(anns), 30)
    assert "more than 29 tokens" in proc.stderr
    emb = load_embedding_init(files["embedding"], ntoken=d.ntoken)
    assert emb.shape == (d.ntoken, 300) and emb.dtype == np.float32
    assert 0.25 < emb.std() < 0.4  # the documented N(0, 0.33^2) offline substitute
    leftovers = [n for n in os.listdir(out) if ".tmp" in n]
    assert not leftovers


def test_glove_init_and_train_only_dictionary(tdiuc_prepared, tmp_path):
    root, _, _ = tdiuc_prepared
    glove = tmp_path / "glove.txt"
    glove.write_text("what " + " ".join(["0.5"] * 300) + "\n" +
                     "is " + " ".join(["-1"] * 300) + "\nzzz " + " ".join(["2"] * 300) + "\n")
    out = tmp_path / "prepared"
    fx.run_vqa_main("preprocess_tdiuc.py", "--data_root", root, "--out_dir", out, "--glove", glove,
                    "--dictionary_splits", "train", "--seq_len", "12")
    files = dataset_files(str(out), "tdiuc")
    d = load_dictionary(files["dictionary"])
    assert fx.UNKNOWN_WORD not in d.word2idx and d.seq_len == 12
    emb = load_embedding_init(files["embedding"], ntoken=d.ntoken)
    assert (emb[d.word2idx["what"]] == 0.5).all() and (emb[d.word2idx["is"]] == -1).all()
    assert (emb[d.unk_index] == 0).all()
    others = [i for w, i in d.word2idx.items() if w not in ("what", "is")]
    assert (emb[others] == 0).all()
    assert load_h5_attrs(files["val"])["num_unknown_tokens"] == 1
    assert load_questions(files["train"], ["qseq"])["qseq"].shape[1] == 12
