"""Fashion-MNIST idx files -> an ImageNet-style folder tree, a class order and label files.

Writes, under ``--out_dir``:
  train/c<k>_<name>/train_<index>.png   from train-{images-idx3,labels-idx1}-ubyte.gz
  val/c<k>_<name>/test_<index>.png      from t10k-{images-idx3,labels-idx1}-ubyte.gz
  fashion_mnist_class_order.txt         c0_tshirt ... c9_ankle_boot (the Fashion-MNIST label order)
  manifest.json                         the settings and image counts (marks the tree as complete)
and, with make_numpy_imagenet_label_files.py's code, ``<labels_dir>/imagenet_{train,val}_labels.npy``
(default ``<out_dir>/labels``). Images are ``--size`` x ``--size`` RGB PNGs (the 28 x 28 grey digit
resized bilinearly, copied to the three channels). ``<index>`` is the image's position in the idx
file, so ImageFolder order within a class is the idx order. ``--train_per_class`` /
``--val_per_class`` keep the first N images of each class (in idx order) for small, fast demos.

The tree is built in a temporary folder beside ``--out_dir`` and renamed when complete, so an
interrupted run never leaves a half tree. A complete tree made with the same settings is kept
(the script only re-checks it and rewrites the label files); one made with other settings is
rebuilt.

Where the idx files come from (first that has all four files):
  1. ``--idx_dir DIR`` when given (only there);
  2. otherwise ``data/FashionMNIST/raw`` under the repository (where ``--download`` puts them) and
     the folder where the Debian/Ubuntu package ``dataset-fashion-mnist`` installed them (asked
     from ``dpkg -L``);
  3. with ``--download``: torchvision's FashionMNIST download into ``--download_root`` (online only).
Otherwise the script stops with one line saying how to get the data.
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
from PIL import Image

from image_classification_experiments import imagenet_folders as folders
from remind.runtime import write_json
from remind.runtime import run_cli
from image_classification_experiments.imagenet_folders import DataError
from image_classification_experiments.make_numpy_imagenet_label_files import make_label_files

CLASS_FOLDERS = ("c0_tshirt", "c1_trouser", "c2_pullover", "c3_dress", "c4_coat",
                 "c5_sandal", "c6_shirt", "c7_sneaker", "c8_bag", "c9_ankle_boot")
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FILE_PREFIX = {"train": "train", "val": "test"}
DEBIAN_PACKAGE = "dataset-fashion-mnist"
REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DOWNLOAD_ROOT = os.path.join(REPO_DIR, "data")
CLASS_ORDER_FILE = "fashion_mnist_class_order.txt"
MANIFEST = "manifest.json"
FORMAT = "remind-fashion-mnist-imagefolder-v1"
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
HOW_TO_GET = ("get Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
              "or re-run with --download when online (torchvision download into data/), or pass "
              "--idx_dir DIR holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
              "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idx_dir", default=None,
                   help="folder with the four Fashion-MNIST idx .gz files (default: search, see above)")
    p.add_argument("--download", action="store_true",
                   help="if no idx files are found, download them with torchvision (needs internet)")
    p.add_argument("--download_root", default=DEFAULT_DOWNLOAD_ROOT,
                   help="torchvision download root (files land in <root>/FashionMNIST/raw)")
    p.add_argument("--out_dir", default=os.path.join("data", "fashion_mnist_64"),
                   help="dataset root to write (train/ and val/)")
    p.add_argument("--labels_dir", "--label_dir", dest="labels_dir", default=None,
                   help="output folder of imagenet_{train,val}_labels.npy (default: <out_dir>/labels)")
    p.add_argument("--size", "--image_size", dest="size", type=int, default=64,
                   help="side of the written RGB images in pixels")
    p.add_argument("--train_per_class", type=int, default=None,
                   help="keep the first N training images of each class (default: all 6000)")
    p.add_argument("--val_per_class", type=int, default=None,
                   help="keep the first N test images of each class (default: all 1000)")
    p.add_argument("--overwrite", action="store_true", help="rebuild the tree even if complete")
    args = p.parse_args(argv)
    if args.labels_dir is None:
        args.labels_dir = os.path.join(args.out_dir, "labels")
    for name in ("train_per_class", "val_per_class"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise DataError(f"--{name} must be at least 1")
    if not 8 <= args.size <= 1024:
        raise DataError(f"--size {args.size}: expected 8..1024 pixels")
    return args


# ------------------------------------------------------------------------------ idx files
def has_idx_files(folder):
    return all(os.path.isfile(os.path.join(folder, f)) for pair in IDX_FILES.values() for f in pair)


def debian_idx_dir():
    """The folder of the idx files of the installed Debian package, or None (no dpkg / package)."""
    try:
        proc = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    for line in proc.stdout.splitlines():
        if line.strip().endswith(IDX_FILES["train"][0]):
            return os.path.dirname(line.strip())
    return None


def candidate_dirs(download_root):
    dirs = [os.path.join(download_root, "FashionMNIST", "raw")]
    deb = debian_idx_dir()
    return dirs + ([deb] if deb else [f"(Debian package {DEBIAN_PACKAGE}: not installed)"])


def download(download_root):
    """torchvision's FashionMNIST download; returns the raw folder, or raises DataError."""
    import remind  # noqa: F401  (makes torchvision importable beside a CPU-only torch)
    from torchvision.datasets import FashionMNIST

    print(f"downloading Fashion-MNIST with torchvision into {download_root}", flush=True)
    try:
        for train in (True, False):
            FashionMNIST(download_root, train=train, download=True)
    except (OSError, RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"Fashion-MNIST download failed ({reason}); {HOW_TO_GET}") from None
    return os.path.join(download_root, "FashionMNIST", "raw")


def find_idx_dir(idx_dir, allow_download, download_root):
    if idx_dir is not None:
        if has_idx_files(idx_dir):
            return idx_dir
        raise DataError(f"Fashion-MNIST idx files not found in --idx_dir {idx_dir}; {HOW_TO_GET}")
    looked = candidate_dirs(download_root)
    for folder in looked:
        if has_idx_files(folder):
            return folder
    if allow_download:
        folder = download(download_root)
        if has_idx_files(folder):
            return folder
    raise DataError(f"Fashion-MNIST idx files not found (looked in {', '.join(looked)}); {HOW_TO_GET}")


def _read_gz(path):
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from None


def read_idx_images(path):
    """uint8 [n, rows, cols] from an idx3 file (gzip; 16-byte big-endian header)."""
    raw = _read_gz(path)
    if len(raw) < 16:
        raise DataError(f"{path}: too short for an idx3 header")
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != IMAGE_MAGIC:
        raise DataError(f"{path}: magic number {magic:#010x}, expected {IMAGE_MAGIC:#010x} (idx3 uint8 images)")
    if len(raw) - 16 != n * rows * cols:
        raise DataError(f"{path}: header says {n} images of {rows}x{cols} but holds {len(raw) - 16} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(int(n), int(rows), int(cols))


def read_idx_labels(path):
    """uint8 [n] from an idx1 file (gzip; 8-byte big-endian header)."""
    raw = _read_gz(path)
    if len(raw) < 8:
        raise DataError(f"{path}: too short for an idx1 header")
    magic, n = np.frombuffer(raw[:8], dtype=">u4")
    if magic != LABEL_MAGIC:
        raise DataError(f"{path}: magic number {magic:#010x}, expected {LABEL_MAGIC:#010x} (idx1 uint8 labels)")
    if len(raw) - 8 != n:
        raise DataError(f"{path}: header says {n} labels but holds {len(raw) - 8} bytes")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8)
    if labels.size and labels.max() >= len(CLASS_FOLDERS):
        raise DataError(f"{path}: label {labels.max()} outside 0..{len(CLASS_FOLDERS) - 1}")
    return labels


def read_split(idx_dir, split):
    img_file, lab_file = (os.path.join(idx_dir, f) for f in IDX_FILES[split])
    images, labels = read_idx_images(img_file), read_idx_labels(lab_file)
    if len(images) != len(labels):
        raise DataError(f"{img_file} has {len(images)} images but {lab_file} has {len(labels)} labels")
    return images, labels


def first_per_class(labels, per_class):
    """Indices of the first ``per_class`` items of each class (all with None), ascending."""
    if per_class is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:per_class]] = True
    return np.flatnonzero(keep)


# ------------------------------------------------------------------------------ the tree
def settings(args):
    """What defines the tree (the idx files are the same data whichever copy they come from)."""
    return {"format": FORMAT, "size": args.size, "train_per_class": args.train_per_class,
            "val_per_class": args.val_per_class, "classes": list(CLASS_FOLDERS)}


def read_manifest(out_dir):
    path = os.path.join(out_dir, MANIFEST)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tree_is_complete(out_dir, wanted):
    """The manifest matches ``wanted`` and every listed image count is on disk."""
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("settings") != wanted:
        return False
    for split, per_class in manifest.get("counts", {}).items():
        for cls, n in per_class.items():
            folder = os.path.join(out_dir, split, cls)
            if not os.path.isdir(folder) or len(os.listdir(folder)) != n:
                return False
    return os.path.isfile(os.path.join(out_dir, CLASS_ORDER_FILE))


def write_split(root, split, images, labels, keep, size):
    counts = {}
    prefix = FILE_PREFIX[split]
    for cls in CLASS_FOLDERS:
        os.makedirs(os.path.join(root, split, cls), exist_ok=True)
    for i in keep:
        cls = CLASS_FOLDERS[labels[i]]
        img = Image.fromarray(images[i], "L")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        img.convert("RGB").save(os.path.join(root, split, cls, f"{prefix}_{i:05d}.png"),
                                format="PNG", compress_level=1)
        counts[cls] = counts.get(cls, 0) + 1
    return {cls: counts.get(cls, 0) for cls in CLASS_FOLDERS}


def build_tree(idx_dir, out_dir, args, wanted):
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.", suffix=".tmp",
                           dir=parent)
    try:
        counts = {}
        for split, per_class in (("train", args.train_per_class), ("val", args.val_per_class)):
            images, labels = read_split(idx_dir, split)
            keep = first_per_class(labels, per_class)
            print(f"{split}: writing {len(keep)} of {len(labels)} images as {args.size}x{args.size} "
                  "RGB PNGs", flush=True)
            counts[split] = write_split(tmp, split, images, labels, keep, args.size)
            empty = [c for c, n in counts[split].items() if n == 0]
            if empty:
                raise DataError(f"{idx_dir}: no {split} images of classes {', '.join(empty)}")
        folders.write_class_order(os.path.join(tmp, CLASS_ORDER_FILE), CLASS_FOLDERS)
        write_json(os.path.join(tmp, MANIFEST), {"settings": wanted, "counts": counts,
                                                 "source": os.path.abspath(idx_dir)})
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if os.path.lexists(out_dir):  # an incomplete or outdated tree: move it away, then drop it
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.", suffix=".old",
                                   dir=parent)
            os.replace(out_dir, os.path.join(old, "tree"))
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv=None):
    args = parse_args(argv)
    out_dir = args.out_dir
    class_order = os.path.join(out_dir, CLASS_ORDER_FILE)
    wanted = settings(args)
    if not args.overwrite and tree_is_complete(out_dir, wanted):
        print(f"{out_dir}: complete tree with the same settings; reusing it")
    else:
        idx_dir = find_idx_dir(args.idx_dir, args.download, args.download_root)
        if os.path.lexists(out_dir):
            why = "--overwrite" if args.overwrite else "incomplete or made with other settings"
            print(f"{out_dir}: {why}; rebuilding it")
        build_tree(idx_dir, out_dir, args, wanted)
        print(f"wrote {out_dir} (images from {idx_dir})")
    _, per_split, paths = make_label_files(out_dir, args.labels_dir, class_order)
    for split in folders.SPLITS:
        counts = np.bincount(per_split[split], minlength=len(CLASS_FOLDERS))
        print(f"{split}: {len(per_split[split])} images, {len(CLASS_FOLDERS)} classes "
              f"({counts.min()}-{counts.max()} per class) -> {paths[split]}")
    print(f"class order: {class_order}")


if __name__ == "__main__":
    run_cli(main, prog="make_fashion_mnist_imagefolder.py")
