"""Bad input gives one clear line (VQADataError in-process; one stderr line and exit 2 from the
scripts), and no output file is ever left half-written."""
import os

import numpy as np
import pytest

import vqa_fixtures as fx
from vqa_experiments.preprocess import clevr, tdiuc
from vqa_experiments.preprocess.io import atomic_h5
from vqa_experiments.vqa_data import (VQADataError, load_codes, load_dictionary,
                                      load_embedding_init, load_questions)

def run_failing(name, *args):
    proc = fx.run_vqa_main(name, *args, expect_rc=2)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def tdiuc_root(tmp_path):
    return fx.make_tdiuc(str(tmp_path), n_train_images=6, n_val_images=3)


def test_missing_questions_file_from_the_command_line(tmp_path):
    root = fx.make_clevr(str(tmp_path), n_train_images=3, n_val_images=2)
    os.remove(clevr.questions_path(root, "val"))
    line = run_failing("preprocess_clevr.py", "--data_root", root)
    assert "CLEVR val questions not found" in line and "CLEVR_val_questions.json" in line
    assert not os.path.exists(os.path.join(root, "train_clevr.h5"))


def test_questions_that_do_not_match_annotations(tdiuc_root):
    path = tdiuc.questions_path(tdiuc_root, "train")
    obj = fx.read_json(path)
    dropped = obj["questions"].pop(3)
    fx.write_json(path, obj)
    with pytest.raises(VQADataError, match=f"question_id {dropped['question_id']} .*does not "
                                           "match its annotations"):
        tdiuc.read_questions(tdiuc_root, "train")
    line = run_failing("preprocess_tdiuc.py", "--data_root", tdiuc_root)
    assert "does not match its annotations" in line
    assert not [n for n in os.listdir(tdiuc_root) if n.endswith((".h5", ".json", ".npy"))]


def test_image_id_mismatch(tdiuc_root):
    path = tdiuc.annotations_path(tdiuc_root, "val")
    obj = fx.read_json(path)
    obj["annotations"][0]["image_id"] += 1
    fx.write_json(path, obj)
    with pytest.raises(VQADataError, match="image_id .* does not match"):
        tdiuc.read_questions(tdiuc_root, "val")


@pytest.mark.parametrize("answers", [[], [{"answer": "yes"}, {"answer": "no"}], "yes",
                                     [{"text": "yes"}]])
def test_answer_list_of_the_wrong_shape(tdiuc_root, answers):
    path = tdiuc.annotations_path(tdiuc_root, "train")
    obj = fx.read_json(path)
    obj["annotations"][2]["answers"] = answers
    fx.write_json(path, obj)
    with pytest.raises(VQADataError, match="answer list of the wrong shape"):
        tdiuc.read_questions(tdiuc_root, "train")


def test_malformed_clevr_questions(tmp_path):
    root = fx.make_clevr(str(tmp_path), n_train_images=3, n_val_images=2)
    path = clevr.questions_path(root, "train")
    obj = fx.read_json(path)
    obj["questions"][1]["program"][-1]["function"] = "relate"
    fx.write_json(path, obj)
    with pytest.raises(VQADataError, match="unknown program function 'relate'"):
        clevr.read_questions(root, "train")
    del obj["questions"][1]["answer"]
    fx.write_json(path, obj)
    with pytest.raises(VQADataError, match="question 1 lacks a valid 'answer'"):
        clevr.read_questions(root, "train")
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(VQADataError, match="not valid JSON"):
        clevr.read_questions(root, "train")


def test_atomic_h5_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "table.h5"
    with pytest.raises(RuntimeError):
        with atomic_h5(str(target)) as f:
            f.create_dataset("qid", data=np.arange(5))
            raise RuntimeError("interrupted half-way")
    assert os.listdir(tmp_path) == []
    with atomic_h5(str(target)) as f:
        f.create_dataset("qid", data=np.arange(5))
    assert os.listdir(tmp_path) == ["table.h5"]


def test_loaders_name_the_file(tmp_path):
    missing = str(tmp_path / "train_tdiuc.h5")
    with pytest.raises(VQADataError, match="question table not found: .*train_tdiuc.h5"):
        load_questions(missing)
    with pytest.raises(VQADataError, match="codes file not found"):
        load_codes(missing)
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(VQADataError, match="not a readable HDF5 file"):
        load_questions(str(tmp_path / "broken.h5"))
    np.save(tmp_path / "emb.npy", np.zeros((4, 300), dtype=np.float32))
    with pytest.raises(VQADataError, match=r"embedding shape \(4, 300\), expected \(5, D\)"):
        load_embedding_init(str(tmp_path / "emb.npy"), ntoken=5)
    fx.write_json(str(tmp_path / "d.json"), {"idx2word": ["a", "b"], "seq_len": 5})
    with pytest.raises(VQADataError, match="lacks the unknown token"):
        load_dictionary(str(tmp_path / "d.json"))


def test_feature_extraction_errors(tdiuc_root, tmp_path):
    line = run_failing("extract_image_features.py", "--dataset", "tdiuc", "--data_root",
                       tdiuc_root, "--weights", str(tmp_path / "nope.pt"), "--arch", "resnet18",
                       "--image_size", "32", "--num_workers", "0", "--device", "cpu")
    assert "--weights file not found" in line
    img_dir = os.path.join(tdiuc_root, "Images", "val2014")
    bad = os.path.join(img_dir, sorted(os.listdir(img_dir))[0])
    with open(bad, "wb") as f:
        f.write(b"\x00garbage")
    line = run_failing("extract_image_features.py", "--dataset", "tdiuc", "--data_root",
                       tdiuc_root, "--weights", "none", "--arch", "resnet18", "--image_size", "32",
                       "--num_workers", "1", "--device", "cpu", "--no_progress")
    assert "cannot read the image" in line and os.path.basename(bad) in line
    assert not os.path.exists(os.path.join(tdiuc_root, "features_tdiuc.h5"))
