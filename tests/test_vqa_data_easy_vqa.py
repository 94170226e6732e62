"""easy-VQA -> TDIUC layout, and the demo's whole data preparation at a tiny scale."""
import collections
import os
import subprocess
import sys

import easy_vqa
import numpy as np

import vqa_fixtures as fx
from vqa_experiments.preprocess import tdiuc
from vqa_experiments.vqa_data import (dataset_files, load_codes, load_h5_attrs, load_lut,
                                      load_pq, load_questions)

SCRIPTS = os.path.join(fx.REPO_ROOT, "vqa_experiments")


def test_prepare_easy_vqa_demo_small(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, MAX_TRAIN_IMAGES="40", MAX_VAL_IMAGES="10",
               BACKBONE_STEPS="2", NBITS="6", NUM_THREADS="1")
    out = tmp_path / "demo"
    # run from another working directory: the script must not depend on it
    proc = subprocess.run(["bash", os.path.join(SCRIPTS, "prepare_easy_vqa_demo.sh"), "demo"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "easy-VQA demo data ready" in proc.stdout
    root = str(out / "TDIUC")

    # exact TDIUC layout
    train_imgs = sorted(os.listdir(os.path.join(root, "Images", "train2014")))
    val_imgs = sorted(os.listdir(os.path.join(root, "Images", "val2014")))
    assert len(train_imgs) == 40 and len(val_imgs) == 10
    assert train_imgs[0] == "COCO_train2014_000000000000.jpg"
    assert val_imgs[0] == "COCO_val2014_000000100000.jpg"
    anns = fx.read_json(tdiuc.annotations_path(root, "train"))["annotations"]
    questions = fx.read_json(tdiuc.questions_path(root, "train"))["questions"]
    texts, answers, image_ids = easy_vqa.get_train_questions()
    expected = [k for k, i in enumerate(image_ids) if i < 40]
    assert [q["question_id"] for q in questions] == expected
    assert [a["answers"][0]["answer"] for a in anns] == [answers[k] for k in expected]
    kinds = collections.defaultdict(set)
    for a in anns:
        kinds[a["question_type"]].add(a["answers"][0]["answer"])
    assert kinds["object_presence"] == {"yes", "no"}
    assert kinds["object_recognition"] <= {"circle", "rectangle", "triangle"}
    assert kinds["color"] and not kinds["color"] & {"yes", "no", "circle", "rectangle", "triangle"}
    assert set(kinds) == {"object_presence", "object_recognition", "color"}

    # prepared files for the trainer
    lut = load_lut(dataset_files(root, "tdiuc")["lut"])
    assert lut["idx2qtype"][0] == "object_presence" and len(lut["idx2qtype"]) == 3
    val = load_questions(dataset_files(root, "tdiuc")["val"])
    assert val["iid"].min() >= 100000 and isinstance(val["q"][0], str)
    for order in ("iid", "qtype"):
        files = dataset_files(root, "tdiuc", order)
        codes, index = load_codes(files["codes"])
        assert codes.shape == (50, 4, 4, 32) and codes.dtype == np.uint8
        assert all(int(i) in index for i in val["iid"])
        pq = load_pq(files["pq"])
        assert pq.d == 256 and pq.nbits == 6
        attrs = load_h5_attrs(files["codes"])
        assert attrs["arch"] == "resnet18" and attrs["weights"] == "easy_vqa_resnet18.pt"
    assert os.path.isfile(out / "easy_vqa_resnet18.pt")
