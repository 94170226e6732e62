"""CLEVR v1.0 readers: question JSON -> QuestionRecords, image files -> image ids."""
import os

from vqa_experiments.preprocess.questions import QuestionRecords
from vqa_experiments.vqa_data import VQADataError, read_json

SPLITS = ("train", "val")
SPLIT_PREFIX = {"train": "1", "val": "2"}  # iid = int(prefix + str(image_index))

# The function of a question's last program node -> one of the 5 categories (the reference's).
FUNCTION_TO_QTYPE = {
    "count": "count",
    "equal_color": "compare_attribute", "equal_material": "compare_attribute",
    "equal_shape": "compare_attribute", "equal_size": "compare_attribute",
    "exist": "exist",
    "greater_than": "compare_integer", "less_than": "compare_integer",
    "equal_integer": "compare_integer",
    "query_color": "query_attribute", "query_material": "query_attribute",
    "query_shape": "query_attribute", "query_size": "query_attribute",
}
QTYPES = ("count", "compare_attribute", "exist", "compare_integer", "query_attribute")


def image_id(split, image_index):
    return int(SPLIT_PREFIX[split] + str(int(image_index)))


def questions_path(root, split):
    return os.path.join(root, "questions", f"CLEVR_{split}_questions.json")


def read_questions(root, split):
    path = questions_path(root, split)
    obj = read_json(path, f"CLEVR {split} questions")
    entries = obj.get("questions") if isinstance(obj, dict) else None
    if not isinstance(entries, list):
        raise VQADataError(f"{path}: expected an object with a 'questions' list")
    rec = QuestionRecords([], [], [], [], [])
    for n, e in enumerate(entries):
        try:
            last = e["program"][-1]["function"]
            rec.qid.append(int(e["question_index"]))
            rec.iid.append(image_id(split, e["image_index"]))
            rec.question.append(str(e["question"]))
            rec.answer.append(str(e["answer"]))
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise VQADataError(f"{path}: question {n} lacks a valid {err} field (question, "
                               "question_index, image_index, answer and program are needed)") from None
        if last not in FUNCTION_TO_QTYPE:
            raise VQADataError(f"{path}: question {n} ends with the unknown program function "
                               f"{last!r}")
        rec.qtype.append(FUNCTION_TO_QTYPE[last])
    return rec


def image_iid(split, file_name):
    """``CLEVR_train_000123.png`` -> ``int("1" + "123")``, as the reference computed it."""
    stem = os.path.splitext(file_name)[0]
    try:
        return image_id(split, stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        raise VQADataError(f"CLEVR image name {file_name!r} does not end in _<index>") from None


def image_dirs(root):
    """``[(split, folder relative to the image root)]`` and the image root."""
    return os.path.join(root, "images"), [(s, s) for s in SPLITS]
