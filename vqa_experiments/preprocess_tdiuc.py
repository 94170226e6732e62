"""Question preprocessing for TDIUC (Questions/, Annotations/).

Writes LUT_tdiuc.json, dictionary_tdiuc.json, embedding_init_300d_tdiuc.npy, {train,val}_tdiuc.h5 and
preprocess_tdiuc_summary.json into --out_dir (formats: vqa_experiments/DATA_FORMATS.md).
"""
import argparse

from vqa_experiments.preprocess import tdiuc
from remind.runtime import run_cli
from vqa_experiments.preprocess.questions import add_question_args, run_question_preprocessing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_question_args(parser, "tdiuc", default_dictionary_splits="train,val")
    args = parser.parse_args(argv)
    run_question_preprocessing(args, "tdiuc", tdiuc.read_questions, tdiuc.SPLITS)


if __name__ == "__main__":
    run_cli(main)
