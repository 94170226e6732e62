"""Write a seeded random class order (one wnid per line) from the class folders of a train folder.

For datasets without a published order. To reproduce the paper on ImageNet use its own order
instead (see imagenet_files/README.md). An existing order file is never overwritten silently.
"""
import argparse
import os

from image_classification_experiments import imagenet_folders as folders
from remind.runtime import run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", "--images_dir", dest="data", metavar="DIR", required=True,
                   help="dataset root holding train/ (one sub-folder per class)")
    p.add_argument("--class_order_text_file", default="./imagenet_files/imagenet_class_order.txt",
                   help="output file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing order file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = args.class_order_text_file
    if os.path.exists(out) and not args.overwrite:
        raise folders.DataError(f"{out} exists; pass --overwrite to replace it")
    order = folders.random_class_order(folders.split_dir(args.data, "train"), args.seed)
    folders.write_class_order(out, order)
    print(f"{len(order)} classes in random order (seed {args.seed}) -> {out}")


if __name__ == "__main__":
    run_cli(main, prog="make_random_class_order.py")
