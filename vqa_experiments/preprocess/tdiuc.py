"""TDIUC readers: questions + annotations -> QuestionRecords, image files -> ids."""
import os

from vqa_experiments.preprocess.questions import QuestionRecords
from vqa_experiments.vqa_data import VQADataError, read_json

SPLITS = ("train", "val")
QTYPES = ("object_presence", "absurd", "color", "counting", "object_recognition",
          "scene_recognition", "positional_reasoning", "sport_recognition", "attribute",
          "activity_recognition", "sentiment_understanding", "utility_affordance")


def questions_path(root, split):
    return os.path.join(root, "Questions", f"OpenEnded_mscoco_{split}2014_questions.json")


def annotations_path(root, split):
    return os.path.join(root, "Annotations", f"mscoco_{split}2014_annotations.json")


def _entries(path, key, what):
    obj = read_json(path, what)
    entries = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(entries, list):
        raise VQADataError(f"{path}: expected an object with a {key!r} list")
    return entries


def read_questions(root, split):
    """Rows in annotation order; every annotation must match a question of the same split."""
    qpath, apath = questions_path(root, split), annotations_path(root, split)
    questions = {}
    for n, q in enumerate(_entries(qpath, "questions", f"TDIUC {split} questions")):
        try:
            questions[int(q["question_id"])] = (str(q["question"]), int(q["image_id"]))
        except (KeyError, TypeError, ValueError) as err:
            raise VQADataError(f"{qpath}: question {n} lacks a valid {err} field") from None
    rec = QuestionRecords([], [], [], [], [])
    for n, a in enumerate(_entries(apath, "annotations", f"TDIUC {split} annotations")):
        try:
            qid, iid, qtype, answers = (int(a["question_id"]), int(a["image_id"]),
                                        str(a["question_type"]), a["answers"])
        except (KeyError, TypeError, ValueError) as err:
            raise VQADataError(f"{apath}: annotation {n} lacks a valid {err} field") from None
        if qid not in questions:
            raise VQADataError(f"{apath}: question_id {qid} (annotation {n}) is not in {qpath}; "
                               "the questions file does not match its annotations")
        text, q_iid = questions[qid]
        if q_iid != iid:
            raise VQADataError(f"{apath}: question_id {qid} has image_id {iid}, but {q_iid} in "
                               f"{qpath}; the questions file does not match its annotations")
        if not isinstance(answers, list) or len(answers) != 1 or not isinstance(answers[0], dict) \
                or "answer" not in answers[0]:
            shape = len(answers) if isinstance(answers, list) else type(answers).__name__
            raise VQADataError(f"{apath}: question_id {qid} has an answer list of the wrong shape "
                               f"({shape} entries; TDIUC needs exactly one {{'answer': ...}})")
        rec.qid.append(qid)
        rec.iid.append(iid)
        rec.question.append(text)
        rec.answer.append(str(answers[0]["answer"]))
        rec.qtype.append(qtype)
    return rec


def image_iid(split, file_name):
    """``COCO_train2014_000000000009.jpg`` -> 9 (the last ``_``-separated token)."""
    stem = os.path.splitext(file_name)[0]
    try:
        return int(stem.rsplit("_", 1)[-1])
    except ValueError:
        raise VQADataError(f"TDIUC image name {file_name!r} does not end in _<image id>") from None


def image_dirs(root):
    return os.path.join(root, "Images"), [(s, f"{s}2014") for s in SPLITS]
