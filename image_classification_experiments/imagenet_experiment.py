"""REMIND class-incremental streaming on an ImageNet-style folder tree.

Base initialisation puts the PQ codes of every base-init training image in the replay buffer (from
the cache written by extract_features.py and fit_pq.py; computed here when absent). Then the
remaining classes stream in ``--class_increment`` chunks, one image at a time, in ImageFolder
order. After base init and after each chunk, one prediction pass over the val images of all seen
classes gives top-1/top-5 on the seen, base and non-base classes.

This script is the ImageNet reader: its flags, the class chunks as the segments of the shared
stream (``stream_loop``), the val images of the seen classes as the evaluation, and the names of
the per-point files. The step, the outputs and the run state are the shared modules'
(``stream_model``, ``stream_eval``, ``stream_outputs``, ``stream_state``, ``stream_loop``).

The base network's fc rows are taken by class name in the run's class order (the wnid of each
label, from the label files and the train folders; ``stream_model.load_stream_network``), so a
checkpoint of the reference (alphabetical rows) gives the same run as ours.

Outputs in ``--save_dir``: config.json, log.txt, the reference's per-point files in its label
space (``reference_layout``: accuracies_min_trained_<a>_max_trained_<b>.json,
preds_min_trained_<a>_max_trained_<b>.pth with alphabetical columns and ImageFolder rows, ours
beside it in preds_min_trained_<a>_max_trained_<b>_ordered.pt, remind_model/remind_classifier_F_<b>.pth
under the reference's keys and ours, and remind_model/remind_state_<b>.pt, the whole run
state in place of the reference's pickled buffer; ``--keep_states K`` keeps the last K),
results.json, results.csv, accuracy_plot.png, and checkpoints/latest.pt (with the one before it,
latest.1.pt), from which ``--resume`` continues exactly where the run stopped. Every input is
checked before the save dir is written (``stream_preflight``), and the disk the run needs is
logged before it starts.

Run states (latest.pt, remind_state_<b>.pt) are run checkpoints of kind ``remind_ic_stream``
(``remind.runtime``; see ``stream_state``) with the fingerprint of the run-defining settings
(``RUN_DEFINING``); a resume with other values of those is refused. States of the previous
version (no format) are still read.
"""
import argparse
import os

import remind  # noqa: F401  (torchvision compatibility)
import torch

from image_classification_experiments import imagenet_data as data
from image_classification_experiments import imagenet_folders as folders
from image_classification_experiments.base_init_cache import ensure_base_init_cache
from image_classification_experiments.imagenet_folders import DataError
from image_classification_experiments.stream_eval import EvalCodes, fmt, predict, score
from image_classification_experiments.stream_loop import (PlotSpec, Segment, StreamRun, open_run_folder, run_stream,
                                                          start_run)
from image_classification_experiments.reference_layout import ReferenceSpace
from image_classification_experiments.stream_model import (add_step_arguments, build_model, check_step_arguments,
                                                           fill_buffer, load_stream_network)
from image_classification_experiments.stream_preflight import (base_cache_bytes, check_base_vectors, check_codebooks,
                                                               check_feature_shape, check_resume_point,
                                                               check_run_flags, log_disk_estimate)
from image_classification_experiments.stream_state import (add_state_arguments, fresh_state, load_state,
                                                           point_state_path, resume_latest)
from remind.networks import LABEL_SPACES
from remind.runtime import add_run_arguments, configure_tf32, default_device, fingerprint, run_cli

KIND = "remind_ic_stream"  # the run checkpoints' format (latest.pt and remind_model/remind_state_<b>.pt)
# Settings that define the run: a resume with other values would silently mix two experiments.
RUN_DEFINING = ("classifier_ckpt", "extract_features_from", "classifier", "num_classes", "min_class",
                "base_init_classes", "class_increment", "streaming_max_class",
                "num_codebooks", "codebook_size", "rehearsal_samples", "max_buffer_size", "lr_mode",
                "lr_step_size", "start_lr", "end_lr", "samples_per_class", "weight_decay",
                "random_resized_crops", "use_mixup", "mixup_alpha", "image_size", "eval_resize_ratio", "seed",
                "max_per_class", "latent_codec")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_reference_arguments(p)
    add_project_arguments(p)
    add_state_arguments(p)  # --keep_states
    args = p.parse_args(argv)
    if args.save_dir is None:
        args.save_dir = os.path.join("streaming_experiments", args.expt_name)
    args.base_init_dir = args.base_init_dir or os.path.join(args.save_dir, "base_init")
    args.device = args.device or default_device()
    validate_args(args)
    return args


def add_reference_arguments(p):
    """The reference implementation's flags, with its names and defaults."""
    # directories and names
    p.add_argument("--expt_name", default="remind_imagenet")
    p.add_argument("--label_dir", "--labels_dir", dest="label_dir", default="./imagenet_files")
    p.add_argument("--images_dir", required=True, help="folder with train/ and val/")
    p.add_argument("--save_dir", default=None, help="default: streaming_experiments/<expt_name>")
    p.add_argument("--resume_full_path", default=None,
                   help="a save dir of an earlier run: restart from its state after --streaming_min_class "
                        "(its remind_model/remind_state_<streaming_min_class>.pt, which that run's "
                        "--keep_states may have removed)")
    # network (the split, the quantizer, replay, lr and augmentation: add_step_arguments)
    p.add_argument("--base_arch", default="ResNet18ClassifyAfterLayer4_1", help="G (ResNet-18 only)")
    p.add_argument("--classifier_ckpt", required=True, help="base-init checkpoint")
    p.add_argument("--num_channels", type=int, default=512)
    p.add_argument("--spatial_feat_dim", type=int, default=None,
                   help="G's output size (default: from --image_size; 7 at 224 px)")
    p.add_argument("--allow_fc_resize", action="store_true",
                   help="--num_classes differs from the checkpoint's fc: start fc from a random init")
    p.add_argument("--ckpt_label_space", choices=LABEL_SPACES, default=None,
                   help="fc row order of a checkpoint that does not record it: class_order (this "
                        "project's base init) or alphabetical (sorted class folders, the reference's)")
    add_step_arguments(p)
    # streaming setup
    p.add_argument("--num_classes", type=int, default=1000)
    p.add_argument("--min_class", type=int, default=0)
    p.add_argument("--base_init_classes", type=int, default=100)
    p.add_argument("--class_increment", type=int, default=100)
    p.add_argument("--streaming_min_class", type=int, default=100)
    p.add_argument("--streaming_max_class", type=int, default=1000)


def add_project_arguments(p):
    """This project's flags: the base-init cache, data options, resuming and the shared run flags."""
    p.add_argument("--base_init_dir", default=None,
                   help="cache of extract_features.py / fit_pq.py (default: <save_dir>/base_init)")
    p.add_argument("--image_size", type=int, default=224)
    data.add_eval_resize_argument(p)  # the val and stream transform, as in extract_features.py
    p.add_argument("--num_workers", type=int, default=8)
    p.add_argument("--val_labels_csv", default=None, help="LOC_val_solution.csv for a flat val folder")
    p.add_argument("--skip_corrupt_images", action="store_true")
    p.add_argument("--max_per_class", type=int, default=None,
                   help="use only the first N images of each class (small demos)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <save_dir>/checkpoints/latest.pt (starts afresh if absent)")
    # --device, --seed, --num_threads, --progress; checkpoints/latest.pt every --checkpoint_interval
    # streamed samples (one optimizer step each) and every --checkpoint_interval_min minutes, as well
    # as after each chunk; --stop_after_steps N (alias --stop_after_samples) saves and stops.
    add_run_arguments(p, checkpoints=True, checkpoint_interval=10000)


def validate_args(args):
    data.check_image_size(args.image_size)
    check_step_arguments(args)
    if not 0 <= args.min_class < args.base_init_classes <= args.streaming_min_class:
        raise DataError("need 0 <= --min_class < --base_init_classes <= --streaming_min_class")
    if not args.streaming_min_class <= args.streaming_max_class <= args.num_classes:
        raise DataError("need --streaming_min_class <= --streaming_max_class <= --num_classes")
    if args.class_increment < 1:
        raise DataError(f"--class_increment must be positive, got {args.class_increment}")
    if not os.path.isfile(args.classifier_ckpt):
        raise DataError(f"--classifier_ckpt {args.classifier_ckpt}: file not found")
    check_run_flags(args)
    check_codebooks(args.num_channels, args, "--num_channels")


# ------------------------------------------------------------------- the ImageNet reader
def make_model(args, device, run=None):
    """G, F from the checkpoint, the fc rows in the run's class order (``run.label_space``; without
    a run, from the label files); the quantizer and buffer come from the base-init cache or a state."""
    space = run.label_space if run is not None else train_label_space(args)
    g, f = load_stream_network(args, space.label_classes, space.class_folders, run.log if run is not None else print)
    side = args.spatial_feat_dim or -(-args.image_size // 32)
    return build_model(args, g, f, args.num_classes, args.num_channels, side, device)


def train_label_space(args, train=None):
    """The run's classes in our label space and the reference's (``train``: the train split's
    samples and labels, read when not given)."""
    train = train or data.load_split(args.images_dir, "train", args.label_dir)[:2]
    return ReferenceSpace(*folders.label_spaces(*train, "the train label file"), args.num_classes)


class ImageNetStream:
    """The ImageNet folders as the runner's stream: class chunks in ImageFolder order, and the val
    images of the classes seen so far at each point (their codes computed once)."""

    def __init__(self, args, tally):
        self.args = args
        self.transform = data.val_transform(args.image_size, args.eval_resize_ratio)
        self.train = data.load_split(args.images_dir, "train", args.label_dir)[:2]
        self.label_space = train_label_space(args, self.train)
        val_samples, val_labels, _ = data.load_split(args.images_dir, "val", args.label_dir, args.val_labels_csv)
        self.val_labels = val_labels
        self.val = EvalCodes(
            lambda lo, hi: data.ClassRangeDataset(val_samples, val_labels, lo, hi, self.transform,
                                                  mark_unreadable=True),
            args.min_class, args, tally, what="val images of classes")

    def segments(self):
        a = self.args
        return [Segment(lo, hi, folders.range_indices(self.train[1], lo, hi, a.max_per_class), f"{lo}-{hi - 1}")
                for lo in range(a.streaming_min_class, a.streaming_max_class, a.class_increment)
                for hi in [min(lo + a.class_increment, a.streaming_max_class)]]

    def dataset_for(self, segment):
        return data.ClassRangeDataset(self.train[0], self.train[1], segment.start, segment.end, self.transform,
                                      self.args.max_per_class, mark_unreadable=True)

    def evaluate(self, model, max_class):
        """Top-1/top-5 on the seen, base and non-base classes' val images."""
        codes, targets = self.val.upto(model, max_class)
        probs = predict(model, codes, self.args)
        base = targets < self.args.base_init_classes
        groups = (("seen_classes", torch.ones_like(base)), ("base_classes", base), ("non_base_classes", ~base))
        preds = {"probs": probs, "targets": targets, "sample_indices": self.val.sample_indices()}
        return preds, {"max_class": max_class, **score(probs, targets, groups)}

    def describe(self, result):
        a, b = self.args.min_class, result["max_class"]
        if b == self.args.base_init_classes:
            return (f"after base init (classes {a}-{b - 1}): top1={result['seen_classes_top1']:.2f}% "
                    f"top5={result['seen_classes_top5']:.2f}%")
        return (f"classes {a}-{b - 1}: seen top1={fmt(result['seen_classes_top1'])} "
                f"top5={fmt(result['seen_classes_top5'])} | base top1={fmt(result['base_classes_top1'])} "
                f"| new top1={fmt(result['non_base_classes_top1'])}")


def stream_run(args, log, tally):
    """The ImageNet stream as a ``StreamRun``."""
    stream = ImageNetStream(args, tally)
    return StreamRun(
        args=args, log=log, tally=tally, kind=KIND, run_fingerprint=fingerprint(args, RUN_DEFINING),
        segments=stream.segments(), base_point=args.base_init_classes, dataset_for=stream.dataset_for,
        evaluate=stream.evaluate, describe=stream.describe, label_space=stream.label_space,
        point_files=lambda r: (f"min_trained_{args.min_class}_max_trained_{r['max_class']}", r["max_class"]),
        point_keys=("max_class",),
        plot=PlotSpec("max_class", "classes seen", (
            ("seen_classes_top1", "seen top-1"), ("seen_classes_top5", "seen top-5"),
            ("base_classes_top1", "base top-1"), ("non_base_classes_top1", "new top-1"))),
        table=(("classes_seen", "max_class"), ("seen_top1", "seen_classes_top1"), ("seen_top5", "seen_classes_top5"),
               ("base_top1", "base_classes_top1"), ("new_top1", "non_base_classes_top1")),
        base_items=len(folders.range_indices(stream.train[1], args.min_class, args.base_init_classes,
                                             args.max_per_class)),
        eval_items=lambda point: int(((stream.val_labels >= args.min_class) & (stream.val_labels < point)).sum()))


def initial_state(run, model):
    """A resumed state (--resume, or the reference's --resume_full_path), or None for a fresh run.
    Reads only: a resume's state is checked before the run writes anything."""
    args = run.args
    state = resume_latest(run, model)
    if state is not None:
        return state
    if args.resume_full_path is not None:
        path = point_state_path(args.resume_full_path, args.streaming_min_class)
        check_resume_point(path, f"--resume_full_path {args.resume_full_path} --streaming_min_class "
                                 f"{args.streaming_min_class}")
        state = load_state(path, run, model)
        run.log(f"resumed from {path}: streaming from class {state['chunk_start']}")
    return state


def base_init_cached(args):
    return all(os.path.isfile(os.path.join(args.base_init_dir, n)) for n in ("pq.npz", "base_init_codes.h5"))


def base_initialize(run, model):
    """The buffer filled from the cache of extract_features.py / fit_pq.py (made when absent)."""
    fill_buffer(model, *ensure_base_init_cache(run.args, run.log), run.log,
                stream_items=sum(len(s.indices) for s in run.segments))


def main(argv=None):
    args = parse_args(argv)
    configure_tf32(args.tf32)  # TF32 off unless --tf32: the paper's numbers are fp32
    config = dict(vars(args))
    device, log = start_run(args, argv)
    tally = data.UnreadableTally(args.skip_corrupt_images)
    run = stream_run(args, log, tally)
    model = make_model(args, device, run)
    check_feature_shape(model, args, args.num_channels)
    state = initial_state(run, model)
    cached = state is None and base_init_cached(args)
    if cached:  # reads only: a cache that does not fit the flags stops the run before it writes
        base_initialize(run, model)
    build = state is None and not cached
    if build:
        check_base_vectors(run.base_items, model, args)
    log_disk_estimate(run, model, base_cache_bytes(run.base_items, model, args.num_channels) if build else 0)
    open_run_folder(args, log, config, resumed=state is not None)
    if build:
        base_initialize(run, model)
    return run_stream(run, model, state or fresh_state(run), state is None)


if __name__ == "__main__":
    run_cli(main, prog="imagenet_experiment.py")
