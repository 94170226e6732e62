"""ImageNet-style folder trees, class orders and label files, in pure Python + NumPy.

Kept free of torch so that the label tools start instantly and every bad-input check (missing
folder, class-order mismatch, stale label file) fails in a fraction of a second with one clear line.

Conventions shared by every image-classification script:
- ``<data>/train`` and ``<data>/val`` hold one sub-folder per class (wnid), as for
  ``torchvision.datasets.ImageFolder``. ``<data>/val`` may instead be the flat Kaggle layout
  (``ILSVRC2012_val_*.JPEG`` directly inside) with ground truth from ``LOC_val_solution.csv``.
- "Sample order" is ImageFolder's: classes sorted by folder name, files sorted within a class.
  A flat val folder is put in the order ImageFolder would give after sorting it into class folders,
  so label files and sample indices do not depend on the val layout.
- The class order (one wnid per line) maps wnids to "ordered labels" 0..K-1; label files hold the
  ordered label of every sample, in sample order: ``<labels_dir>/imagenet_{train,val}_labels.npy``.
"""
import csv
import hashlib
import os

import numpy as np
from remind.errors import InputError

# torchvision.datasets.folder.IMG_EXTENSIONS, repeated so this module needs no torch.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LABEL_FILE = "imagenet_{split}_labels.npy"
# Where the reference's readers looked (its label maker wrote one folder up).
LEGACY_LABEL_SUBDIR = "imagenet_indices"
SPLITS = ("train", "val")


class DataError(InputError):
    """Bad input data or files; scripts print the message as one line and exit non-zero."""


def _preview(names, limit=5):
    names = list(names)
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def is_image_file(name):
    return name.lower().endswith(IMG_EXTENSIONS)


# --------------------------------------------------------------------------------- folder trees
def split_dir(data_dir, split):
    """``<data_dir>/<split>``, which must exist."""
    path = os.path.join(data_dir, split)
    if not os.path.isdir(path):
        raise DataError(f"{split} folder not found: {path} (expected <data>/{split})")
    return path


def list_class_folders(root):
    """Class folder names under ``root`` in ImageFolder order (sorted)."""
    if not os.path.isdir(root):
        raise DataError(f"image folder not found: {root}")
    return sorted(e.name for e in os.scandir(root) if e.is_dir())


def scan_image_folder(root):
    """[(path, wnid)] exactly as ImageFolder lists them (same files, same order)."""
    classes = list_class_folders(root)
    if not classes:
        raise DataError(f"no class folders in {root} (expected one sub-folder per class)")
    samples, empty = [], []
    for wnid in classes:
        n0 = len(samples)
        for dirpath, _, fnames in sorted(os.walk(os.path.join(root, wnid), followlinks=True)):
            samples.extend((os.path.join(dirpath, f), wnid) for f in sorted(fnames) if is_image_file(f))
        if len(samples) == n0:
            empty.append(wnid)
    if empty:
        raise DataError(f"class folders without images in {root}: {_preview(empty)}")
    return samples


def read_val_solution_csv(csv_path):
    """{ImageId: wnid} from Kaggle's LOC_val_solution.csv (PredictionString starts with the wnid)."""
    if not os.path.isfile(csv_path):
        raise DataError(f"val labels csv not found: {csv_path}")
    truth = {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise DataError(f"{csv_path}: expected the columns ImageId,PredictionString "
                            f"(Kaggle LOC_val_solution.csv), found {reader.fieldnames}")
        for row_no, row in enumerate(reader, start=2):
            image_id = (row["ImageId"] or "").strip()
            tokens = (row["PredictionString"] or "").split()
            if not image_id or not tokens:
                raise DataError(f"{csv_path}:{row_no}: empty ImageId or PredictionString")
            if image_id in truth and truth[image_id] != tokens[0]:
                raise DataError(f"{csv_path}:{row_no}: {image_id} listed twice with different classes")
            truth[image_id] = tokens[0]
    if not truth:
        raise DataError(f"{csv_path}: no rows")
    return truth


def scan_flat_val(val_dir, csv_path):
    """[(path, wnid)] for a flat val folder, in the order ImageFolder gives once sorted into classes."""
    if not os.path.isdir(val_dir):
        raise DataError(f"val folder not found: {val_dir}")
    truth = read_val_solution_csv(csv_path)
    files = sorted(e.name for e in os.scandir(val_dir) if e.is_file() and is_image_file(e.name))
    if not files:
        raise DataError(f"no images directly inside {val_dir}; --val_labels_csv expects the flat "
                        "Kaggle layout (drop the flag if val has one folder per class)")
    unlabeled = [f for f in files if os.path.splitext(f)[0] not in truth]
    if unlabeled:
        raise DataError(f"val images without a row in {csv_path}: {_preview(unlabeled)}")
    samples = [(os.path.join(val_dir, f), truth[os.path.splitext(f)[0]]) for f in files]
    samples.sort(key=lambda s: (s[1], os.path.basename(s[0])))
    return samples


def scan_split(data_dir, split, val_labels_csv=None):
    """Samples of ``<data_dir>/<split>``: class sub-folders, or flat val + csv."""
    root = split_dir(data_dir, split)
    if split == "val" and val_labels_csv:
        return scan_flat_val(root, val_labels_csv)
    if split == "val" and not list_class_folders(root):
        raise DataError(f"{root} has no class sub-folders; for the flat Kaggle val layout pass "
                        "--val_labels_csv LOC_val_solution.csv")
    return scan_image_folder(root)


def sample_classes(samples):
    """Distinct wnids of a sample list, sorted."""
    return sorted({wnid for _, wnid in samples})


# --------------------------------------------------------------------------------- class order
def read_class_order(path):
    """Wnids, one per line (blank lines and surrounding spaces ignored); duplicates are an error."""
    if not os.path.isfile(path):
        raise DataError(f"class order file not found: {path}")
    with open(path) as f:
        lines = [(no, line.strip()) for no, line in enumerate(f, start=1)]
    order, first_line = [], {}
    dups = []
    for no, name in lines:
        if not name:
            continue
        if name in first_line:
            dups.append(f"{name} (lines {first_line[name]} and {no})")
            continue
        first_line[name] = no
        order.append(name)
    if dups:
        raise DataError(f"{path}: duplicate classes: {_preview(dups, 3)}")
    if not order:
        raise DataError(f"{path}: empty class order file")
    return order


def write_class_order(path, order):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write("".join(name + "\n" for name in order))
    os.replace(tmp, path)


def random_class_order(train_dir, seed):
    """The class folders of ``train_dir`` in a seeded random order (NumPy PCG64 permutation)."""
    classes = list_class_folders(train_dir)
    if not classes:
        raise DataError(f"no class folders in {train_dir}")
    perm = np.random.default_rng(seed).permutation(len(classes))
    return [classes[i] for i in perm]


def check_class_order(order, found, where, order_file):
    """The classes found on disk must be exactly those of the order file."""
    order_set, found_set = set(order), set(found)
    missing = [c for c in order if c not in found_set]
    extra = sorted(found_set - order_set)
    if missing:
        raise DataError(f"classes in {order_file} but not in {where}: {_preview(missing)}")
    if extra:
        raise DataError(f"classes in {where} but not in {order_file}: {_preview(extra)}")


def ordered_labels(samples, order):
    """int64 ordered label of every sample (position of its wnid in the class order)."""
    position = {wnid: i for i, wnid in enumerate(order)}
    return np.fromiter((position[wnid] for _, wnid in samples), dtype=np.int64, count=len(samples))


def class_order_from_labels(samples, labels, where="label file"):
    """The class order a label file encodes: ``order[k]`` is the wnid of the samples labelled k.

    This is what a base-init checkpoint records (its fc row k is ``order[k]``), read back from the
    label files and the folder scan, so no script needs the order text file itself."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(samples):
        raise DataError(f"{where}: {len(labels)} labels for {len(samples)} images")
    if not len(labels):
        return []
    first = np.unique(labels, return_index=True)[1]
    order = [None] * (int(labels.max()) + 1)
    for i in first:
        order[int(labels[i])] = samples[i][1]
    gaps = [k for k, wnid in enumerate(order) if wnid is None]
    if gaps:
        raise DataError(f"{where}: no images carry label {gaps[0]}; re-run make_numpy_imagenet_label_files.py")
    return order


def label_spaces(samples, labels, where="label file"):
    """(class order, class folders) of a split: the wnid of each label k (row k of this project's
    checkpoints) and every class folder sorted (ImageFolder's indices: the reference's rows)."""
    return class_order_from_labels(samples, labels, where), sample_classes(samples)


def check_same_class_order(order, other, where):
    """Two splits' label files must give each class the same label (they are made together)."""
    clash = [k for k in range(min(len(order), len(other))) if order[k] != other[k]]
    if clash:
        k = clash[0]
        raise DataError(f"{where}: label {k} is {other[k]} there but {order[k]} in the train labels; "
                        "the label files come from different class orders, re-run "
                        "make_numpy_imagenet_label_files.py")


# --------------------------------------------------------------------------------- label files
def label_file_path(labels_dir, split):
    return os.path.join(labels_dir, LABEL_FILE.format(split=split))


def find_label_file(labels_dir, split):
    """``<labels_dir>/imagenet_<split>_labels.npy``, else the reference's ``imagenet_indices/`` copy."""
    candidates = [label_file_path(labels_dir, split),
                  os.path.join(labels_dir, LEGACY_LABEL_SUBDIR, LABEL_FILE.format(split=split))]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise DataError(f"{split} label file not found: {candidates[0]} (nor {candidates[1]}); "
                    "make it with make_numpy_imagenet_label_files.py")


def load_labels(labels_dir, split, samples=None):
    """Ordered labels of a split; checked against the sample list when one is given.

    Checks that catch a label file made for another tree or class order: the length equals the
    number of images, and every class folder maps to exactly one label and vice versa.
    """
    path = find_label_file(labels_dir, split)
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy label file ({err})") from None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: expected a 1-D integer array, got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: negative labels")
    if samples is not None:
        if len(labels) != len(samples):
            raise DataError(f"{path} has {len(labels)} labels but the {split} folder has "
                            f"{len(samples)} images; re-run make_numpy_imagenet_label_files.py")
        _check_labels_match_folders(labels, samples, path)
    return labels, path


def _check_labels_match_folders(labels, samples, path):
    wnids = np.array([wnid for _, wnid in samples])
    uniq, folder_ids = np.unique(wnids, return_inverse=True)
    pairs = np.unique(np.stack([folder_ids, labels]), axis=1)
    per_folder = np.bincount(pairs[0], minlength=len(uniq))
    if (per_folder != 1).any():
        bad = uniq[per_folder != 1][0]
        raise DataError(f"{path}: images of class {bad} carry different labels; the label file "
                        "was made for another folder tree, re-run make_numpy_imagenet_label_files.py")
    if len(np.unique(pairs[1])) != pairs.shape[1]:
        raise DataError(f"{path}: two classes share one label; the label file was made for another "
                        "folder tree or class order, re-run make_numpy_imagenet_label_files.py")


def save_labels(labels_dir, split, labels):
    """Write int64 labels atomically (temp name + rename), so a crash leaves no half file."""
    os.makedirs(labels_dir, exist_ok=True)
    path = label_file_path(labels_dir, split)
    tmp = os.path.join(labels_dir, f".{os.path.basename(path)}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.asarray(labels, dtype=np.int64))
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- class ranges
def range_indices(labels, min_class, max_class, max_per_class=None):
    """Sample indices with ordered label in [min_class, max_class), ascending (ImageFolder order).

    ``max_per_class`` keeps the first images of each class, for small demos.
    """
    idx = np.flatnonzero((labels >= min_class) & (labels < max_class))
    if max_per_class is not None:
        # rank of each sample within its class, in sample order
        sel_labels = labels[idx]
        order = np.argsort(sel_labels, kind="stable")
        sorted_labels = sel_labels[order]
        starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order)) - starts
        idx = idx[rank < max_per_class]
    return idx


def samples_digest(samples, indices, root):
    """sha256 over the relative paths of the chosen samples: detects a changed folder tree."""
    h = hashlib.sha256()
    for i in indices:
        h.update(os.path.relpath(samples[i][0], root).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_sha256(path, block=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(block)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
