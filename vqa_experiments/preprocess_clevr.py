"""Question preprocessing for CLEVR v1.0 (questions/CLEVR_{train,val}_questions.json).

Writes LUT_clevr.json, dictionary_clevr.json, embedding_init_300d_clevr.npy, {train,val}_clevr.h5 and
preprocess_clevr_summary.json into --out_dir (formats: vqa_experiments/DATA_FORMATS.md).
"""
import argparse

from vqa_experiments.preprocess import clevr
from remind.runtime import run_cli
from vqa_experiments.preprocess.questions import add_question_args, run_question_preprocessing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_question_args(parser, "clevr", default_dictionary_splits="train")
    args = parser.parse_args(argv)
    run_question_preprocessing(args, "clevr", clevr.read_questions, clevr.SPLITS)


if __name__ == "__main__":
    run_cli(main)
