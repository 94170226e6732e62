"""Convert easy-VQA (PyPI ``easy-vqa``) into the exact TDIUC on-disk layout, for offline demos.

easy-VQA train -> ``train2014``, test -> ``val2014``. Question types: colour answers -> ``color``,
shape answers -> ``object_recognition``, yes/no -> ``object_presence``. Image ids: the easy-VQA id
(train) or id + 100000 (test); question ids: the question's position (train) or position +
1000000 (test). Images are re-encoded as JPEG (64x64, quality --jpeg_quality).

Writes ``OUT_DIR/Questions/OpenEnded_mscoco_{train2014,val2014}_questions.json``,
``OUT_DIR/Annotations/mscoco_{train,val}2014_annotations.json`` and
``OUT_DIR/Images/{train2014,val2014}/COCO_<split>2014_<12-digit id>.jpg``.
"""
import argparse
import os

from PIL import Image

from remind.runtime import run_cli, write_json
from vqa_experiments.preprocess.tdiuc import annotations_path, questions_path
from vqa_experiments.vqa_data import VQADataError

SHAPES = ("circle", "rectangle", "triangle")
YES_NO = ("yes", "no")
IMAGE_ID_OFFSET = {"train": 0, "val": 100000}
QUESTION_ID_OFFSET = {"train": 0, "val": 1000000}


def question_type(answer, colours):
    if answer in YES_NO:
        return "object_presence"
    if answer in SHAPES:
        return "object_recognition"
    if answer in colours:
        return "color"
    raise VQADataError(f"easy-VQA answer {answer!r} is neither yes/no, a shape nor a colour")


def load_easy_vqa():
    try:
        import easy_vqa
    except ImportError:
        raise VQADataError("the easy-vqa package is not installed (pip install easy-vqa)") from None
    answers = list(easy_vqa.get_answers())
    colours = set(answers) - set(SHAPES) - set(YES_NO)
    return {"train": (easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()),
            "val": (easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths())}, colours


def convert_split(out_dir, split, questions, image_paths, colours, max_images, jpeg_quality):
    texts, answers, image_ids = questions
    kept = sorted(image_paths)[:max_images] if max_images else sorted(image_paths)
    kept_set = set(kept)
    img_dir = os.path.join(out_dir, "Images", f"{split}2014")
    os.makedirs(img_dir, exist_ok=True)
    for eid in kept:
        iid = eid + IMAGE_ID_OFFSET[split]
        target = os.path.join(img_dir, f"COCO_{split}2014_{iid:012d}.jpg")
        with Image.open(image_paths[eid]) as img:
            img.convert("RGB").save(target, quality=jpeg_quality)
    qs, anns = [], []
    for k, (text, answer, eid) in enumerate(zip(texts, answers, image_ids)):
        if eid not in kept_set:
            continue
        qid, iid = k + QUESTION_ID_OFFSET[split], eid + IMAGE_ID_OFFSET[split]
        qs.append({"question": text, "question_id": qid, "image_id": iid})
        anns.append({"question_id": qid, "image_id": iid,
                     "question_type": question_type(answer, colours), "ans_source": "easy-vqa",
                     "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": 1}]})
    header = {"info": {"description": f"easy-VQA {'train' if split == 'train' else 'test'} split "
                                      "in the TDIUC layout"},
              "license": {"name": "MIT (easy-VQA)"}, "data_type": "mscoco",
              "data_subtype": f"{split}2014"}
    write_json(questions_path(out_dir, split), {**header, "task_type": "Open-Ended", "questions": qs})
    write_json(annotations_path(out_dir, split), {**header, "annotations": anns})
    return len(kept), len(qs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", required=True, help="the TDIUC-layout folder to write")
    parser.add_argument("--max_train_images", type=int, default=0,
                        help="keep the first N train images (by id) and their questions; 0 = all")
    parser.add_argument("--max_val_images", type=int, default=0)
    parser.add_argument("--jpeg_quality", type=int, default=95)
    args = parser.parse_args(argv)
    data, colours = load_easy_vqa()
    for split, limit in (("train", args.max_train_images), ("val", args.max_val_images)):
        n_img, n_q = convert_split(args.out_dir, split, *data[split], colours, limit,
                                   args.jpeg_quality)
        print(f"easy-VQA -> TDIUC {split}2014: {n_img} images, {n_q} questions in {args.out_dir}")


if __name__ == "__main__":
    run_cli(main)
