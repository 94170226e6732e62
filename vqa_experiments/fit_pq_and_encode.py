"""Fit the product quantizer on base-init image features; store uint8 codes of every image.

Writes pq_<dataset>_<order>.npz (ProductQuantizer.save) and codes_<dataset>_<order>.h5 into
--data_dir for each --order. Format: vqa_experiments/DATA_FORMATS.md section 6.
"""
import argparse

from remind.runtime import add_run_arguments, resolve_device, run_cli, set_cpu_threads
from vqa_experiments.preprocess.pq_codes import PQ_TRAIN_SETS, fit_and_encode
from vqa_experiments.vqa_data import DATASETS, ORDERS

PROGRESS = {"auto": None, "on": True, "off": False}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--data_dir", required=True,
                        help="folder with the question tables and features_<dataset>.h5")
    parser.add_argument("--features", default=None,
                        help="features h5 (default: DATA_DIR/features_<dataset>.h5)")
    parser.add_argument("--order", nargs="+", default=["iid", "qtype"], choices=ORDERS,
                        help="stream order(s) whose base-init images train the quantizer")
    parser.add_argument("--pq_train_set", default="reference", choices=PQ_TRAIN_SETS,
                        help="reference: the reference's choice per order (iid: first 10%% of "
                             "train image rows; qtype: images of qtypeidx 0); base_init: the "
                             "images of the base-init questions")
    parser.add_argument("--num_codebooks", type=int, default=32)
    parser.add_argument("--nbits", type=int, default=8)
    parser.add_argument("--max_train_vectors", type=int, default=262144,
                        help="fit on the vectors of a random subset of at most this many vectors' "
                             "worth of images (0: all the order's training images)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="answers kept for training (default 28 CLEVR, 1480 TDIUC)")
    parser.add_argument("--chunk_images", type=int, default=256)
    add_run_arguments(parser)  # --device, --seed, --num_threads, --progress / --no_progress
    args = parser.parse_args(argv)
    set_cpu_threads(args.num_threads)
    results = fit_and_encode(args.dataset, args.data_dir, list(dict.fromkeys(args.order)),
                             args.pq_train_set, args.num_codebooks, args.nbits,
                             args.max_train_vectors, args.num_classes, args.features, args.seed,
                             resolve_device(args.device), args.chunk_images,
                             progress=PROGRESS[args.progress])
    for order, r in results.items():
        print(f"{args.dataset} {order}: PQ fitted on {r['num_train_images']} images; "
              f"wrote {r['pq']} and {r['codes']}")


if __name__ == "__main__":
    run_cli(main)
