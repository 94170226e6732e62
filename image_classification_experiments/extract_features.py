"""Run the frozen G of the base-init network over the base-init training images; save to h5.

G is the ResNet-18 from conv1 up to and including ``--extract_features_from`` (default
``layer4.0``: 512 x 7 x 7 maps at 224 px), built by ``remind.networks`` (so it is the very G the
streaming model uses), in eval mode under ``torch.no_grad``; images get the val transform
(resize to ``--eval_resize_ratio`` x the size + center crop), as in the reference's base
initialization. The work is done by the core's ``remind.feature_store``; this script supplies
the network, the images and the checks.

The base network is loaded as the streaming model loads it (``remind.networks.load_base_network``):
its fc rows are mapped to the run's class order (the wnid of each label, read from the label
files and the folder scan). Our checkpoints record their rows; the reference's (keys under
``model.``, an ``arch`` entry) have alphabetical rows; any other must say which with
``--ckpt_label_space``. An fc with more outputs than ``--num_classes`` keeps the rows of the first
``--num_classes`` classes of the class order (the base init trains rows in class order);
``--allow_fc_resize`` starts a random fc instead. G itself never depends on the fc.

Output (``--features_file``, default ``<save_dir>/base_init_features.h5``), a feature store in the
NCHW layout (the format of this cache since its first version):
  features  float32 [N, C, H, W]   G's output
  labels    int64   [N]            ordered (class-order) label
  indices   int64   [N]            ImageFolder sample index in the split (the replay item id)
  attrs: extract_features_from, image_size, eval_resize_ratio, resize, classifier_ckpt,
         classifier_ckpt_sha256, split, min_class, max_class, num_classes (of the loaded fc),
         skipped_unreadable, layout, fingerprint (JSON of every input; the resize ratio only
         when not the default, so files made before the flag existed stay up to date), build_id
         (new on every write, so fit_pq.py sees a rebuilt file), ...
Rows are in ImageFolder order. The file is written under a temporary name and renamed when
complete. An existing file made from the same inputs (same fingerprint) is kept unless
``--overwrite``; one made from other inputs, or one that skipped unreadable images, is rebuilt.
"""
import argparse
import dataclasses
import json
import os
import time
import uuid

import remind  # noqa: F401  (makes torchvision importable beside a CPU-only torch)
import h5py

from image_classification_experiments import imagenet_data as data
from image_classification_experiments import imagenet_folders as folders
from image_classification_experiments.imagenet_folders import DataError
from remind.feature_store import UnreadableImages, write_feature_store
from remind.networks import LABEL_SPACES, block_after, freeze, load_base_network, split_resnet
from remind.runtime import add_run_arguments, configure_tf32, resolve_device, run_cli, set_cpu_threads

FORMAT = "remind-features-v1"
LAYOUT = "NCHW"
SKIP_FLAG = "--skip_corrupt_images"


@dataclasses.dataclass
class FeatureSettings:
    """Everything one extraction needs; the fields are the command-line flags of this script."""
    images_dir: str
    label_dir: str
    classifier_ckpt: str
    features_file: str
    extract_features_from: str = "layer4.0"
    min_class: int = 0
    base_init_classes: int = 100
    split: str = "train"
    val_labels_csv: str = None
    num_classes: int = None
    ckpt_label_space: str = None
    allow_fc_resize: bool = False
    eval_resize_ratio: float = data.DEFAULT_EVAL_RESIZE_RATIO
    num_channels: int = None
    spatial_feat_dim: int = None
    batch_size: int = 128
    num_workers: int = 8
    device: str = None
    image_size: int = 224
    channels_last: bool = False
    max_per_class: int = None
    skip_corrupt_images: bool = False
    overwrite: bool = False
    progress: str = "on"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images_dir", "--data", dest="images_dir", required=True,
                   help="dataset root holding train/ and val/")
    p.add_argument("--label_dir", "--labels_dir", dest="label_dir", default="./imagenet_files",
                   help="folder of imagenet_{train,val}_labels.npy")
    p.add_argument("--classifier_ckpt", required=True, help="base-init checkpoint (any layout)")
    p.add_argument("--extract_features_from", default="layer4.0",
                   help="last block of G (reference spelling model.layer4.0 accepted)")
    p.add_argument("--min_class", type=int, default=0)
    p.add_argument("--base_init_classes", type=int, default=100,
                   help="extract the images of classes [min_class, base_init_classes)")
    p.add_argument("--split", default="train", choices=folders.SPLITS)
    p.add_argument("--val_labels_csv", default=None,
                   help="LOC_val_solution.csv when val/ is the flat Kaggle layout")
    p.add_argument("--num_classes", type=int, default=None,
                   help="classes of the fc (default: those of the class order); a wider checkpoint fc "
                        "keeps the rows of the first --num_classes classes")
    p.add_argument("--ckpt_label_space", choices=LABEL_SPACES, default=None,
                   help="fc row order of a checkpoint that does not record it: class_order (this "
                        "project's base init) or alphabetical (sorted class folders, the reference's)")
    p.add_argument("--allow_fc_resize", action="store_true",
                   help="an fc without rows for the classes: start it from a random init")
    p.add_argument("--num_channels", type=int, default=None, help="check G's output channels")
    p.add_argument("--spatial_feat_dim", type=int, default=None, help="check G's output H (= W)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("-j", "--workers", "--num_workers", dest="num_workers", type=int, default=8)
    p.add_argument("--image_size", type=int, default=224)
    data.add_eval_resize_argument(p)
    p.add_argument("--channels_last", action="store_true", help="channels_last memory format")
    p.add_argument("--max_per_class", type=int, default=None,
                   help="only the first N images of each class (as in a capped base-init run)")
    p.add_argument(SKIP_FLAG, action="store_true",
                   help="leave out (and count) unreadable image files instead of stopping")
    p.add_argument("--save_dir", default="base_init")
    p.add_argument("--features_file", default=None,
                   help="output h5 (default: <save_dir>/base_init_features.h5)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if up to date")
    add_run_arguments(p, seed=False)
    p.set_defaults(progress="on")  # the extraction bar was always shown
    args = p.parse_args(argv)
    if args.features_file is None:
        args.features_file = os.path.join(args.save_dir, "base_init_features.h5")
    return args


def load_G(s, extract_features_from, samples, labels, label_file, log=print):
    """(frozen G ending with ``extract_features_from``, the size of the loaded fc).

    The whole base network is loaded with its fc rows mapped to the class order, so a checkpoint
    the streaming model would refuse is refused here too, before any image is read."""
    class_order, class_folders = folders.label_spaces(samples, labels, label_file)
    # Rows for classes past the class order have no images to be features of; G needs none of them.
    num_classes = min(s.num_classes, len(class_order)) if s.num_classes else None
    model = load_base_network(s.classifier_ckpt, class_order, class_folders,
                              num_classes=num_classes, label_space=s.ckpt_label_space,
                              allow_fc_resize=s.allow_fc_resize, log=log)
    G, _ = split_resnet(model, block_after(extract_features_from))
    return freeze(G), int(model.fc.out_features)


def fingerprint(s, split_block, label_file, samples, dataset):
    """Everything the output depends on; equal fingerprints mean the file is up to date."""
    return json.dumps({
        "format": FORMAT,
        "classifier_ckpt_sha256": folders.file_sha256(s.classifier_ckpt),
        "extract_features_from": split_block, "image_size": s.image_size,
        **({} if s.eval_resize_ratio == data.DEFAULT_EVAL_RESIZE_RATIO  # older files stay up to date
           else {"eval_resize_ratio": s.eval_resize_ratio}),
        "split": s.split, "min_class": s.min_class, "max_class": s.base_init_classes,
        "max_per_class": s.max_per_class,
        "label_file_sha256": folders.file_sha256(label_file),
        "num_samples": len(dataset),
        "samples_sha256": folders.samples_digest(
            samples, dataset.indices, os.path.join(s.images_dir, s.split)),
    }, sort_keys=True)


def reusable(path, fp):
    """(True, why) when ``path`` was made from the same inputs and is complete."""
    try:
        with h5py.File(path, "r") as f:
            same = f.attrs.get("fingerprint") == fp
            skipped = int(f.attrs.get("skipped_unreadable", 0))
    except OSError:
        return False, "it is not a readable h5 file"
    if not same:
        return False, "it was made from other inputs"
    if skipped:  # the broken files may have been replaced since
        return False, f"it left out {skipped} unreadable image(s)"
    return True, ""


def check_settings(s):
    """Bad flags fail before any work; returns G's last block without the ``model.`` prefix."""
    data.check_image_size(s.image_size)
    block_after(s.extract_features_from)
    if not 0 <= s.min_class < s.base_init_classes:
        raise DataError(f"--min_class {s.min_class} must be below --base_init_classes "
                        f"{s.base_init_classes}")
    if not os.path.isfile(s.classifier_ckpt):
        raise DataError(f"checkpoint not found: {s.classifier_ckpt}")
    return s.extract_features_from.removeprefix("model.")


def shape_check(s):
    """``check_shape`` for the feature store: G's maps against --num_channels/--spatial_feat_dim."""
    def check(h, w, c):
        if s.num_channels is not None and c != s.num_channels:
            raise DataError(f"G ends with {c} channels, --num_channels says {s.num_channels}")
        if s.spatial_feat_dim is not None and h != s.spatial_feat_dim:
            raise DataError(f"G's maps are {h} x {w}, --spatial_feat_dim says {s.spatial_feat_dim}")
    return check


def batches(loader):
    """The loader's batches in the feature store's form: (images, columns, unreadable markers)."""
    for x, y, idx, bad in loader:
        yield x, ({} if x is None else {"labels": y, "indices": idx}), bad


def extract_base_init_features(s, log=print):
    """Write (or keep, when up to date) the features file of ``s`` (a ``FeatureSettings``)."""
    split_block = check_settings(s)
    device = resolve_device(s.device)
    samples, labels, label_file = data.load_split(s.images_dir, s.split, s.label_dir, s.val_labels_csv)
    dataset = data.ClassRangeDataset(samples, labels, s.min_class, s.base_init_classes,
                                     data.val_transform(s.image_size, s.eval_resize_ratio), s.max_per_class,
                                     mark_unreadable=True)
    if len(dataset) == 0:
        raise DataError(f"no {s.split} images with labels in [{s.min_class}, {s.base_init_classes})")
    fp = fingerprint(s, split_block, label_file, samples, dataset)
    out = s.features_file
    if os.path.exists(out) and not s.overwrite:
        ok, why = reusable(out, fp)
        if ok:
            log(f"{out} is up to date (same checkpoint, data and settings); pass --overwrite to rebuild")
            return out
        log(f"{out}: {why}; rebuilding it")

    G, num_classes = load_G(s, split_block, samples, labels, label_file, log)
    loader = data.make_loader(dataset, s.batch_size, s.num_workers, pin_memory=device.type == "cuda")
    tally = UnreadableImages(s.skip_corrupt_images, SKIP_FLAG)
    attrs = {
        "format": FORMAT, "fingerprint": fp, "build_id": uuid.uuid4().hex,
        "extract_features_from": split_block,
        "image_size": s.image_size, "resize": data.resize_size(s.image_size, s.eval_resize_ratio),
        "eval_resize_ratio": s.eval_resize_ratio,
        "classifier_ckpt": s.classifier_ckpt,
        "classifier_ckpt_sha256": json.loads(fp)["classifier_ckpt_sha256"],
        "num_classes": num_classes, "split": s.split, "min_class": s.min_class,
        "max_class": s.base_init_classes, "max_per_class": s.max_per_class or 0,
        "images_dir": s.images_dir, "label_file": label_file,
    }
    t0 = time.time()
    n, h, w, c = write_feature_store(
        G.to(device), batches(loader), out, len(dataset), layout=LAYOUT, device=device,
        channels_last=s.channels_last, unreadable=tally, attrs=attrs, check_shape=shape_check(s),
        progress={"auto": None, "on": True, "off": False}[s.progress], desc="extract")
    secs = time.time() - t0
    log(f"{n} images -> features {n} x {c} x {h} x {w} from {split_block} in {secs:.1f} s "
        f"({n / max(secs, 1e-9):.1f} img/s) -> {out}" + (f"; {tally.summary()}" if tally.count else ""))
    return out


def main(argv=None):
    args = parse_args(argv)
    set_cpu_threads(args.num_threads)
    configure_tf32(args.tf32)
    extract_base_init_features(FeatureSettings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(FeatureSettings)}))


if __name__ == "__main__":
    run_cli(main)
