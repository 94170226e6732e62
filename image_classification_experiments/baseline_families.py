"""The two image-classification streams as the baselines see them: ImageNet-style folders
(``imagenet_experiment``) and CORe50 (``core50_experiment``), through the very pieces those scripts
use (flags, stream, network, base initialisation), so a baseline evaluates on the same points
and test images and writes the same files as a REMIND run.

``parse_baseline_args(argv, add_own, default_expt)`` splits a baseline's command line: its own
flags (``--dataset imagenet|core50`` and what ``add_own`` adds) and everything else, parsed by the
family's own ``parse_args`` (same flags, defaults and checks as its streaming script).
``prepare(args, argv)`` then opens the run (``stream_loop.open_run``) and returns a ``Prepared``:
the family's ``StreamRun`` and a ``REMINDModel`` holding G and F, its quantizer not yet fitted.
"""
import argparse
import dataclasses
import hashlib
import os

import torch

from image_classification_experiments import core50_data as c50
from image_classification_experiments import core50_experiment as core50
from image_classification_experiments import imagenet_data as data
from image_classification_experiments import imagenet_experiment as imagenet
from image_classification_experiments.base_init_cache import ensure_base_init_cache
from image_classification_experiments.stream_codecs import features_file_for
from image_classification_experiments.stream_eval import EvalCodes
from image_classification_experiments.stream_loop import open_run
from image_classification_experiments.stream_model import fill_buffer

DATASETS = ("imagenet", "core50")


@dataclasses.dataclass
class Prepared:
    dataset: str
    args: object
    device: object
    log: object
    tally: object
    run: object  # the family's StreamRun
    model: object  # REMINDModel: G, F as the stream starts, an unfitted quantizer
    frames: tuple = None  # CORe50: (train, test, order, base, points)


def parse_baseline_args(argv, add_own, default_expt, description):
    """(own args, family args): ``--dataset`` and the flags ``add_own(parser)`` adds are the
    baseline's; the rest go to the family's parse_args (``--expt_name`` defaults to
    ``<default_expt>_<dataset>``)."""
    own = argparse.ArgumentParser(description=description, allow_abbrev=False, add_help=False)
    own.add_argument("--dataset", choices=DATASETS, default="imagenet",
                     help="imagenet: an ImageNet-style folder tree (imagenet_experiment.py's flags); core50: "
                          "the CORe50 tree (core50_experiment.py's flags)")
    add_own(own)
    argv = list(argv) if argv is not None else None
    if argv is None:
        import sys

        argv = sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        own.print_help()
        print("\nEvery other flag is the streaming script's of --dataset; its help:\n")
    mine, rest = own.parse_known_args(argv)
    if not any(a == "--expt_name" or a.startswith("--expt_name=") for a in rest):
        rest = ["--expt_name", f"{default_expt}_{mine.dataset}"] + rest
    family = imagenet if mine.dataset == "imagenet" else core50
    return mine, family.parse_args(rest)


def prepare(dataset, args, argv):
    """Open the run and build the family's stream and model, as its streaming script does."""
    if dataset == "core50":
        run, model, frames = core50.open_stream(args, argv)
        return Prepared(dataset, args, model.device, run.log, run.tally, run, model, frames)
    device, log = open_run(args, argv)
    tally = data.UnreadableTally(args.skip_corrupt_images)
    run = imagenet.stream_run(args, log, tally)
    return Prepared(dataset, args, device, log, tally, run, imagenet.make_model(args, device, run))


def stream_items(run):
    return sum(len(s.indices) for s in run.segments)


def _core50_base_folder(prep):
    return os.path.join(prep.run.save_dir, "base_init")


def base_features_file(prep):
    """G's feature maps of the base-init items (a feature store; made when absent)."""
    if prep.dataset == "imagenet":
        return features_file_for(ensure_base_init_cache(prep.args, prep.log)[1])
    train, _, order, base, _ = prep.frames
    path = os.path.join(_core50_base_folder(prep), "base_init_features.h5")
    core50.write_base_features(prep.model, train, order[:base], prep.args, prep.tally, path)
    return path


def base_codes(prep):
    """The base-init items' codes and labels, with the run's quantizer fitted into ``prep.model``
    (its buffer filled, as the streaming script's base initialisation does)."""
    if prep.dataset == "imagenet":
        files = ensure_base_init_cache(prep.args, prep.log)
    else:
        base_features_file(prep)
        files = core50.fit_base_codes(prep.model, prep.args, _core50_base_folder(prep), prep.log)
    return fill_buffer(prep.model, *files, prep.log, stream_items=stream_items(prep.run))


def base_dataset(prep):
    """The base-init items as a dataset of ``(image, label, index)`` (the stream's transform)."""
    a = prep.args
    if prep.dataset == "imagenet":
        samples, labels = data.load_split(a.images_dir, "train", a.label_dir)[:2]
        return data.ClassRangeDataset(samples, labels, a.min_class, a.base_init_classes,
                                      data.val_transform(a.image_size, a.eval_resize_ratio), a.max_per_class,
                                      mark_unreadable=True)
    train, _, order, base, _ = prep.frames
    return c50.Core50Dataset(train, order[:base], c50.eval_transform(a.image_size), mark_unreadable=True)


def point_settings(prep, point):
    """The settings that define the data an offline learner has seen at ``point`` and what it is
    scored on (no streaming-method setting: REMIND, fine-tune and the ablations share them)."""
    a = prep.args
    common = {"dataset": prep.dataset, "images_dir": os.path.abspath(a.images_dir), "point": int(point),
              "extract_features_from": a.extract_features_from, "classifier": a.classifier,
              "num_classes": a.num_classes, "image_size": a.image_size}
    if prep.dataset == "imagenet":
        from image_classification_experiments.imagenet_folders import file_sha256

        return {**common, "label_dir": os.path.abspath(a.label_dir), "val_labels_csv": a.val_labels_csv,
                "classifier_ckpt_sha256": file_sha256(a.classifier_ckpt), "min_class": a.min_class,
                "base_init_classes": a.base_init_classes, "max_per_class": a.max_per_class,
                "eval_resize_ratio": a.eval_resize_ratio, "allow_fc_resize": a.allow_fc_resize}
    train, _, order, _, _ = prep.frames
    seen = hashlib.sha256("\n".join(sorted(os.path.relpath(train.paths[i], train.root)
                                           for i in order[:point])).encode()).hexdigest()
    return {**common, "weights": a.weights, "weights_sha256": a.weights_sha256, "seed": a.seed,
            "train_sessions": list(a.train_sessions), "test_sessions": list(a.test_sessions),
            "frame_step": a.frame_step, "seen_frames_sha256": seen}


def state_digest(state):
    """sha256 of a state dict's tensors and values (a quantizer's identity in cache keys)."""
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        h.update(key.encode())
        if torch.is_tensor(value):
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        elif hasattr(value, "tobytes"):
            h.update(value.tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def reset_eval_codes(run):
    """Forget the evaluation images' cached codes (when G changes between points)."""
    reader = getattr(run.evaluate, "__self__", None)
    for value in vars(reader).values() if reader is not None else ():
        if isinstance(value, EvalCodes):  # back to its state before the first evaluation
            value.__init__(value.dataset_between, value.start, value.args, value.tally, value.what)
