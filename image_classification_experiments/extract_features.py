"""Run the frozen G of the base-init network over the base-init training images; save to h5.

G is the ResNet-18 from conv1 up to and including ``--extract_features_from`` (default
``layer4.0``: 512 x 7 x 7 maps at 224 px), built by ``remind.networks`` (so it is the very G the
streaming model uses), in eval mode under ``torch.no_grad``; images get the val transform
(resize + center crop), as in the reference's base initialization.

Output (``--features_file``, default ``<save_dir>/base_init_features.h5``):
  features  float32 [N, C, H, W]   G's output
  labels    int64   [N]            ordered (class-order) label
  indices   int64   [N]            ImageFolder sample index in the split (the replay item id)
  attrs: extract_features_from, image_size, classifier_ckpt, classifier_ckpt_sha256, split,
         min_class, max_class, num_classes, skipped_unreadable, fingerprint (JSON of every
         input), build_id (new on every write, so fit_pq.py sees a rebuilt file), ...
Rows are in ImageFolder order. The file is written under a temporary name and renamed when
complete. An existing file made from the same inputs (same fingerprint) is kept unless
``--overwrite``; one made from other inputs, or one that skipped unreadable images, is rebuilt.
"""
import argparse
import json
import os
import time
import uuid

import remind  # noqa: F401  (makes torchvision importable beside a CPU-only torch)
import h5py
import torch
from tqdm import tqdm

from image_classification_experiments import imagenet_data as data
from image_classification_experiments import imagenet_folders as folders
from remind.networks import block_after, build_resnet18, freeze, load_resnet_weights, \
    read_state_dict, split_resnet
from image_classification_experiments.ic_common import atomic_output, default_device, resolve_device, run_cli
from image_classification_experiments.imagenet_folders import DataError

FORMAT = "remind-features-v1"


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
                   help="check the checkpoint's fc size (default: take it from the checkpoint)")
    p.add_argument("--num_channels", type=int, default=None, help="check G's output channels")
    p.add_argument("--spatial_feat_dim", type=int, default=None, help="check G's output H (= W)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("-j", "--workers", "--num_workers", dest="num_workers", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--channels_last", action="store_true", help="channels_last memory format")
    p.add_argument("--max_per_class", type=int, default=None,
                   help="only the first N images of each class (as in a capped base-init run)")
    p.add_argument("--skip_corrupt_images", action="store_true",
                   help="leave out (and count) unreadable image files instead of stopping")
    p.add_argument("--save_dir", default="base_init")
    p.add_argument("--features_file", default=None,
                   help="output h5 (default: <save_dir>/base_init_features.h5)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if up to date")
    args = p.parse_args(argv)
    if args.device is None:
        args.device = default_device()
    if args.features_file is None:
        args.features_file = os.path.join(args.save_dir, "base_init_features.h5")
    return args


def load_G(checkpoint_path, extract_features_from, num_classes=None):
    """(frozen G ending with ``extract_features_from``, the checkpoint's fc size).

    The fc size is read from the checkpoint (G has no fc, but the weights must load strictly).
    """
    state = read_state_dict(checkpoint_path)
    if "fc.weight" not in state:
        raise DataError(f"{checkpoint_path}: not a ResNet-18 checkpoint (no fc.weight)")
    ckpt_classes = int(state["fc.weight"].shape[0])
    if num_classes is not None and num_classes != ckpt_classes:
        raise DataError(f"{checkpoint_path}: the checkpoint has a {ckpt_classes}-way fc, "
                        f"--num_classes says {num_classes}")
    model = build_resnet18(ckpt_classes)
    load_resnet_weights(model, state, checkpoint_path)
    G, _ = split_resnet(model, block_after(extract_features_from))
    return freeze(G), ckpt_classes


def fingerprint(args, split_block, label_file, samples, dataset):
    """Everything the output depends on; equal fingerprints mean the file is up to date."""
    return json.dumps({
        "format": FORMAT,
        "classifier_ckpt_sha256": folders.file_sha256(args.classifier_ckpt),
        "extract_features_from": split_block, "image_size": args.image_size,
        "split": args.split, "min_class": args.min_class, "max_class": args.base_init_classes,
        "max_per_class": args.max_per_class,
        "label_file_sha256": folders.file_sha256(label_file),
        "num_samples": len(dataset),
        "samples_sha256": folders.samples_digest(
            samples, dataset.indices, os.path.join(args.images_dir, args.split)),
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


def extract(G, loader, out, attrs, device, channels_last, tally, n_expected):
    """Stream G's outputs batch by batch into h5 datasets (never the whole array in memory)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    pos = 0
    feats = None
    bar = tqdm(total=n_expected, unit="img", unit_scale=True, desc="extract", dynamic_ncols=True)
    with h5py.File(out, "w") as f:
        for x, y, idx in data.iterate_batches(loader, tally):
            if x is None:
                continue
            with torch.no_grad():
                z = G(x.to(device, non_blocking=True, memory_format=fmt)).float()
            z = z.contiguous().cpu().numpy()
            if feats is None:
                c, h, w = z.shape[1:]
                rows = int(max(1, min(n_expected, (1 << 20) // (c * h * w * 4))))
                feats = f.create_dataset("features", shape=(n_expected, c, h, w),
                                         maxshape=(None, c, h, w), dtype="float32",
                                         chunks=(rows, c, h, w))
                labels = f.create_dataset("labels", shape=(n_expected,), maxshape=(None,),
                                          dtype="int64")
                indices = f.create_dataset("indices", shape=(n_expected,), maxshape=(None,),
                                           dtype="int64")
            n = z.shape[0]
            feats[pos:pos + n] = z
            labels[pos:pos + n] = y.numpy()
            indices[pos:pos + n] = idx.numpy()
            pos += n
            bar.update(n)
        bar.close()
        if pos == 0:
            raise DataError("no readable images to extract features from")
        if pos < n_expected:
            for ds in (feats, labels, indices):
                ds.resize(pos, axis=0)
        attrs["skipped_unreadable"] = n_expected - pos
        f.attrs.update(attrs)
        shape = tuple(feats.shape[1:])
    return pos, shape


def main(argv=None):
    args = parse_args(argv)
    data.check_image_size(args.image_size)
    block_after(args.extract_features_from)  # a bad layer name fails before any work
    split_block = args.extract_features_from.removeprefix("model.")
    if not 0 <= args.min_class < args.base_init_classes:
        raise DataError(f"--min_class {args.min_class} must be below --base_init_classes "
                        f"{args.base_init_classes}")
    if not os.path.isfile(args.classifier_ckpt):
        raise DataError(f"checkpoint not found: {args.classifier_ckpt}")
    device = resolve_device(args.device)

    samples, labels, label_file = data.load_split(args.images_dir, args.split, args.label_dir,
                                                  args.val_labels_csv)
    dataset = data.ClassRangeDataset(samples, labels, args.min_class, args.base_init_classes,
                                     data.val_transform(args.image_size), args.max_per_class,
                                     mark_unreadable=True)
    if len(dataset) == 0:
        raise DataError(f"no {args.split} images with labels in "
                        f"[{args.min_class}, {args.base_init_classes})")
    fp = fingerprint(args, split_block, label_file, samples, dataset)
    out = args.features_file
    if os.path.exists(out) and not args.overwrite:
        ok, why = reusable(out, fp)
        if ok:
            print(f"{out} is up to date (same checkpoint, data and settings); "
                  "pass --overwrite to rebuild")
            return
        print(f"{out}: {why}; rebuilding it")

    G, num_classes = load_G(args.classifier_ckpt, split_block, args.num_classes)
    G = G.to(device)
    if args.channels_last:
        G = G.to(memory_format=torch.channels_last)
    loader = data.make_loader(dataset, args.batch_size, args.num_workers,
                              pin_memory=device.type == "cuda")
    tally = data.UnreadableTally(args.skip_corrupt_images)
    attrs = {
        "format": FORMAT, "fingerprint": fp, "build_id": uuid.uuid4().hex,
        "extract_features_from": split_block,
        "image_size": args.image_size, "resize": data.resize_size(args.image_size),
        "classifier_ckpt": args.classifier_ckpt,
        "classifier_ckpt_sha256": json.loads(fp)["classifier_ckpt_sha256"],
        "num_classes": num_classes, "split": args.split, "min_class": args.min_class,
        "max_class": args.base_init_classes, "max_per_class": args.max_per_class or 0,
        "images_dir": args.images_dir, "label_file": label_file,
    }
    t0 = time.time()
    with atomic_output(out) as tmp:
        n, shape = extract(G, loader, tmp, attrs, device, args.channels_last, tally, len(dataset))
        if args.num_channels is not None and shape[0] != args.num_channels:
            raise DataError(f"G ends with {shape[0]} channels, --num_channels says {args.num_channels}")
        if args.spatial_feat_dim is not None and shape[1] != args.spatial_feat_dim:
            raise DataError(f"G's maps are {shape[1]} x {shape[2]}, --spatial_feat_dim says "
                            f"{args.spatial_feat_dim}")
    secs = time.time() - t0
    print(f"{n} images -> features {n} x {shape[0]} x {shape[1]} x {shape[2]} from "
          f"{split_block} in {secs:.1f} s ({n / max(secs, 1e-9):.1f} img/s) -> {out}"
          + (f"; {tally.summary()}" if tally.count else ""))


if __name__ == "__main__":
    run_cli(main)
