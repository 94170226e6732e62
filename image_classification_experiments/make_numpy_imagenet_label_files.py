"""Class order (one wnid per line) -> ordered-label files for the train and val folders.

Writes ``<labels_dir>/imagenet_train_labels.npy`` and ``<labels_dir>/imagenet_val_labels.npy``:
int64, the class-order position of every image, in ImageFolder sample order. Every other script
reads them from that same place (the reference wrote them there but read ``imagenet_indices/``;
that old location is still accepted when reading).

The val folder may have one sub-folder per class, or be the flat Kaggle layout with ground truth
from ``LOC_val_solution.csv`` (``--val_labels_csv``): no valprep step is needed.
"""
import argparse
import os

import numpy as np

from image_classification_experiments import imagenet_folders as folders
from remind.runtime import run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", "--images_dir", dest="data", metavar="DIR", required=True,
                   help="dataset root holding train/ and val/")
    p.add_argument("--labels_dir", "--label_dir", dest="labels_dir", default="./imagenet_files",
                   help="output folder for imagenet_{train,val}_labels.npy")
    p.add_argument("--class_order_text_file", default="./imagenet_files/imagenet_class_order.txt",
                   help="one class folder name (wnid) per line, in streaming order")
    p.add_argument("--val_labels_csv", default=None,
                   help="Kaggle LOC_val_solution.csv for a flat val folder")
    return p.parse_args(argv)


def make_label_files(data, labels_dir, class_order_file, val_labels_csv=None):
    """Check the class order against both splits, then write both label files."""
    order = folders.read_class_order(class_order_file)
    per_split = {}
    for split in folders.SPLITS:
        samples = folders.scan_split(data, split, val_labels_csv)
        where = os.path.join(data, split) + (f" (labels from {val_labels_csv})"
                                             if split == "val" and val_labels_csv else "")
        folders.check_class_order(order, folders.sample_classes(samples), where, class_order_file)
        per_split[split] = folders.ordered_labels(samples, order)
    # Written only once both splits checked out, so a failure never leaves a mismatched pair.
    paths = {split: folders.save_labels(labels_dir, split, labels)
             for split, labels in per_split.items()}
    return order, per_split, paths


def main(argv=None):
    args = parse_args(argv)
    order, per_split, paths = make_label_files(args.data, args.labels_dir,
                                               args.class_order_text_file, args.val_labels_csv)
    for split in folders.SPLITS:
        counts = np.bincount(per_split[split], minlength=len(order))
        print(f"{split}: {len(per_split[split])} images, {len(order)} classes "
              f"({counts.min()}-{counts.max()} per class) -> {paths[split]}")


if __name__ == "__main__":
    run_cli(main, prog="make_numpy_imagenet_label_files.py")
