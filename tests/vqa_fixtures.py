"""Tiny CLEVR v1.0 and TDIUC datasets in the real on-disk layouts, for tests.

Functions:

- ``make_clevr(root, ...) -> str``: writes ``root/CLEVR_v1.0/`` with
  ``images/{train,val}/CLEVR_<split>_<6 digits>.png`` (RGBA) and
  ``questions/CLEVR_{train,val}_questions.json`` (real keys: ``image_index``, ``image_filename``,
  ``question_index``, ``question_family_index``, ``split``, ``question``, ``answer``, ``program``).
  All 13 final program functions, hence all 5 categories, occur in train and in val. Train type
  counts are strictly decreasing in the reference's rank order (query_attribute, count,
  compare_attribute, exist, compare_integer), so ``qtypeidx`` matches the real data. Answers come
  from CLEVR's 28. Returns the ``CLEVR_v1.0`` path.
- ``make_tdiuc(root, ...) -> str``: writes ``root/TDIUC/`` with
  ``Questions/OpenEnded_mscoco_{train2014,val2014}_questions.json``,
  ``Annotations/mscoco_{train,val}2014_annotations.json`` (one answer each, VQA-style extra
  fields) and ``Images/{train2014,val2014}/COCO_<split>2014_<12 digits>.jpg``. All 12 question
  types occur in train (counts strictly decreasing in the real rank order, so ``qtypeidx`` 0 is
  ``object_presence``) and in val (round robin). Returns the ``TDIUC`` path.
- ``LONG_QUESTION_TOKENS``: the token count of the one over-long train question each generator
  adds when ``long_question=True`` (50 tokens: truncated at both seq_len defaults).
- ``UNKNOWN_WORD``: a word that appears only in one val question (``val_unknown_word=True``).
- ``read_json(path)`` / ``write_json(path, obj)``: for tests that corrupt the files.
- ``run_vqa_script(name, *args, expect_rc=0, **kwargs) -> CompletedProcess``: runs
  ``vqa_experiments/<name>`` with ``sys.executable`` (text output captured) and asserts the exit
  status (``expect_rc=None`` skips the check).
- ``run_vqa_main(name, *args, expect_rc=0) -> CompletedProcess``: the same in this process (the
  script's ``main`` under ``remind.runtime.run_cli``, as its ``__main__`` block runs it), which
  saves a Python start and the imports (seconds each) where a separate process tests nothing more.

Default sizes: CLEVR 20 train images (10% = 2 images), TDIUC 60 train images.
"""
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LONG_QUESTION_TOKENS = 50
UNKNOWN_WORD = "zorblax"

CLEVR_COLORS = ["gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"]
CLEVR_SHAPES = ["cube", "sphere", "cylinder"]
CLEVR_MATERIALS = ["rubber", "metal"]
CLEVR_SIZES = ["large", "small"]

# category -> (weight in train, final functions); weights strictly decrease in rank order.
CLEVR_CATEGORIES = [
    ("query_attribute", 5, ["query_color", "query_material", "query_shape", "query_size"]),
    ("count", 4, ["count"]),
    ("compare_attribute", 3, ["equal_color", "equal_material", "equal_shape", "equal_size"]),
    ("exist", 2, ["exist"]),
    ("compare_integer", 1, ["greater_than", "less_than", "equal_integer"]),
]

TDIUC_TYPES = ["object_presence", "absurd", "color", "counting", "object_recognition",
               "scene_recognition", "positional_reasoning", "sport_recognition", "attribute",
               "activity_recognition", "sentiment_understanding", "utility_affordance"]
TDIUC_ANSWERS = {
    "object_presence": ["yes", "no"], "absurd": ["doesnotapply"],
    "color": ["white", "red", "blue", "black"], "counting": ["1", "2", "3"],
    "object_recognition": ["dog", "cat", "pizza"], "scene_recognition": ["kitchen", "beach"],
    "positional_reasoning": ["table", "wall"], "sport_recognition": ["tennis", "baseball"],
    "attribute": ["wood", "metal"], "activity_recognition": ["surfing", "skiing"],
    "sentiment_understanding": ["positive", "negative"], "utility_affordance": ["cutting", "riding"],
}
TDIUC_TEMPLATES = {
    "object_presence": "Is there a {obj} in the picture?",
    "absurd": "What is the {obj} flying over?",
    "color": "What color is the man's {obj}, near the table?",
    "counting": "How many {obj}s are there?",
    "object_recognition": "What kind of animal is next to the {obj}?",
    "scene_recognition": "What room is this {obj} in?",
    "positional_reasoning": "What is the {obj} on top of?",
    "sport_recognition": "What sport is the {obj} playing?",
    "attribute": "What is the {obj} made of?",
    "activity_recognition": "What is the {obj} doing?",
    "sentiment_understanding": "How does the {obj} feel?",
    "utility_affordance": "What can the {obj} be used for?",
}
TDIUC_OBJECTS = ["shirt", "person", "bench", "kite", "horse", "bowl"]


def run_vqa_script(name, *args, expect_rc=0, **kwargs):
    script = os.path.join(REPO_ROOT, "vqa_experiments", name)
    proc = subprocess.run([sys.executable, script, *map(str, args)], capture_output=True,
                          text=True, **kwargs)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, proc.stderr
    return proc


def run_vqa_main(name, *args, expect_rc=0, prog=None):
    import torch

    from remind.runtime import run_cli

    module = importlib.import_module("vqa_experiments." + name.removesuffix(".py"))
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()  # a script's --num_threads must not outlive it
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_cli(module.main, argv, prog=prog)
    except SystemExit as exc:
        rc = exc.code or 0
    finally:
        torch.set_num_threads(threads)
    proc = subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())
    if expect_rc is not None:
        assert proc.returncode == expect_rc, proc.stderr
    return proc


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _weighted_cycle(weights, n):
    """n labels cycling through a pattern with label i repeated weights[i] times."""
    pattern = [i for i, w in enumerate(weights) for _ in range(w)]
    return [pattern[k % len(pattern)] for k in range(n)]


def _random_image(rng, width, height, mode):
    arr = np.full((height, width, 3), 128, dtype=np.uint8)
    for _ in range(3):
        x0, y0 = rng.integers(0, width - 4), rng.integers(0, height - 4)
        x1, y1 = x0 + rng.integers(4, width // 2 + 4), y0 + rng.integers(4, height // 2 + 4)
        arr[y0:y1, x0:x1] = rng.integers(0, 256, size=3)
    img = Image.fromarray(arr, "RGB")
    return img.convert("RGBA") if mode == "RGBA" else img


def _long_question():
    words = ["is", "the", "big", "red", "thing", "left", "of", "the", "small", "cube"]
    return " ".join((words * 5)[:LONG_QUESTION_TOKENS]).capitalize() + "?"


def _clevr_question(category, function, k, rng):
    c, s = CLEVR_COLORS[k % 8], CLEVR_SHAPES[k % 3]
    m, z = CLEVR_MATERIALS[k % 2], CLEVR_SIZES[k % 2]
    if category == "query_attribute":
        attr = function.split("_")[1]
        answer = {"color": c, "material": m, "shape": s, "size": z}[attr]
        text = f"What {attr} is the {CLEVR_SIZES[(k + 1) % 2]} thing?"
        if attr in ("material", "size"):
            text = f"What is the {attr} of the {c} object?"
    elif category == "count":
        answer = str(k % 11)
        text = f"How many {z} {c} {s}s are there?"
    elif category == "compare_attribute":
        answer = ["yes", "no"][k % 2]
        text = f"Does the {c} {s} have the same {function.split('_')[1]} as the {m} cube?"
    elif category == "exist":
        answer = ["yes", "no"][k % 2]
        text = f"Are there any {c} {m} {s}s?"
    else:
        answer = ["yes", "no"][k % 2]
        word = {"greater_than": "more", "less_than": "fewer", "equal_integer": "equally many"}
        text = f"Are there {word[function]} {c} things than cube; objects?"
    program = [{"inputs": [], "function": "scene", "value_inputs": []},
               {"inputs": [0], "function": "filter_color", "value_inputs": [c]},
               {"inputs": [1], "function": function, "value_inputs": []}]
    return text, answer, program


def make_clevr(root, n_train_images=20, n_val_images=6, questions_per_image=5,
               image_size=(48, 32), seed=0, long_question=True, val_unknown_word=True):
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "CLEVR_v1.0")
    for split, n_img in (("train", n_train_images), ("val", n_val_images)):
        img_dir = os.path.join(base, "images", split)
        os.makedirs(img_dir, exist_ok=True)
        for i in range(n_img):
            _random_image(rng, *image_size, "RGBA").save(
                os.path.join(img_dir, f"CLEVR_{split}_{i:06d}.png"))
        n_q = n_img * questions_per_image
        if split == "train":
            cats = _weighted_cycle([w for _, w, _ in CLEVR_CATEGORIES], n_q)
        else:
            cats = [k % len(CLEVR_CATEGORIES) for k in range(n_q)]
        fn_counter = {}
        questions = []
        for k, ci in enumerate(cats):
            cat, _, functions = CLEVR_CATEGORIES[ci]
            j = fn_counter.get(cat, 0)
            fn_counter[cat] = j + 1
            text, answer, program = _clevr_question(cat, functions[j % len(functions)], k, rng)
            questions.append({"image_index": k % n_img,
                              "image_filename": f"CLEVR_{split}_{k % n_img:06d}.png",
                              "question_index": k, "question_family_index": ci, "split": split,
                              "question": text, "answer": answer, "program": program})
        if split == "train" and long_question:
            questions[-1]["question"] = _long_question()
        if split == "val" and val_unknown_word:
            questions[0]["question"] = f"What color is the {UNKNOWN_WORD} thing?"
        write_json(os.path.join(base, "questions", f"CLEVR_{split}_questions.json"),
                   {"info": {"split": split, "license": "Creative Commons Attribution (CC BY 4.0)",
                             "version": "1.0", "date": "2/14/2017"}, "questions": questions})
    return base


def make_tdiuc(root, n_train_images=60, n_val_images=12, questions_per_image=4,
               image_size=(48, 40), seed=0, long_question=True, val_unknown_word=True):
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "TDIUC")
    first_id = {"train": 9, "val": 500000}
    qid_offset = {"train": 0, "val": 90000000}
    for split, n_img in (("train", n_train_images), ("val", n_val_images)):
        img_dir = os.path.join(base, "Images", f"{split}2014")
        os.makedirs(img_dir, exist_ok=True)
        iids = [first_id[split] + 3 * i for i in range(n_img)]
        for iid in iids:
            _random_image(rng, *image_size, "RGB").save(
                os.path.join(img_dir, f"COCO_{split}2014_{iid:012d}.jpg"), quality=90)
        n_q = n_img * questions_per_image
        if split == "train":
            types = _weighted_cycle(list(range(len(TDIUC_TYPES), 0, -1)), n_q)
        else:
            types = [k % len(TDIUC_TYPES) for k in range(n_q)]
        questions, annotations = [], []
        for k, ti in enumerate(types):
            qtype = TDIUC_TYPES[ti]
            iid = iids[k % n_img]
            qid = qid_offset[split] + iid * 10 + k // n_img
            text = TDIUC_TEMPLATES[qtype].format(obj=TDIUC_OBJECTS[k % len(TDIUC_OBJECTS)])
            answers = TDIUC_ANSWERS[qtype]
            questions.append({"question": text, "question_id": qid, "image_id": iid})
            annotations.append({"question_id": qid, "image_id": iid, "question_type": qtype,
                                "ans_source": "generation",
                                "answers": [{"answer": answers[k % len(answers)],
                                             "answer_confidence": "yes", "answer_id": 1}]})
        if split == "train" and long_question:
            questions[-1]["question"] = _long_question()
        if split == "val" and val_unknown_word:
            questions[0]["question"] = f"Is there a {UNKNOWN_WORD} in the picture?"
        header = {"info": {"description": "synthetic TDIUC-format test data"}, "license": {},
                  "data_type": "mscoco", "data_subtype": f"{split}2014"}
        write_json(os.path.join(base, "Questions", f"OpenEnded_mscoco_{split}2014_questions.json"),
                   {**header, "task_type": "Open-Ended", "questions": questions})
        write_json(os.path.join(base, "Annotations", f"mscoco_{split}2014_annotations.json"),
                   {**header, "annotations": annotations[::-1]})
    return base
