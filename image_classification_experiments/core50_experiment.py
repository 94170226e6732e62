"""REMIND streaming on CORe50, in any of the four orderings, on the ImageNet script's harness.

The official download (``core50_128x128/s1..s11/o1..o50/C_<ss>_<oo>_<fff>.png``) is read by
``core50_data``; the training frames (every ``--frame_step``-th frame of each video, sessions
``--train_sessions``) are put in the ``--ordering`` (iid, class_iid, instance, class_instance;
seeded by ``--seed``), and the stream is cut at the protocol points (``protocol_points``): the
first ``--base_init_fraction`` of it is the base initialisation, then an evaluation after every
further ``--eval_fraction`` of the training frames and at the end. docs/core50.md gives each
choice and why.

Base initialisation (the network: ResNet-18 with ``--weights none|imagenet|PATH`` and a fresh
``num_classes``-way fc, split into a frozen G and a plastic F as for ImageNet):
  base-init frames -> G -> feature store -> PQ fitted on their vectors -> codes (all in
  <save_dir>/base_init, by ``remind.feature_store``) -> the replay buffer; then F (its plastic
  blocks and the new fc) is trained offline on the decoded codes for ``--base_init_epochs``
  (``remind.offline``: shuffled mini-batches, SGD, cosine lr from ``--base_init_lr``), because
  neither the ImageNet weights' 1000-way fc nor a fresh one knows the CORe50 classes.
Then the rest of the ordered stream is learned one frame at a time by the REMIND step, exactly as
for ImageNet (``--rehearsal_samples 0`` gives the fine-tune baseline). At every point the whole
test set (sessions ``--test_sessions``; codes computed once) is scored: top-1/top-5 on the test
frames of the classes seen so far (``seen_classes``: what compute_omega.py divides), of the
base-init classes, of the other seen classes, and of every class (``all_classes``).

Outputs in ``--save_dir``: config.json, log.txt, stream_order.npy (indices into the training
frames in sample order: session, object, frame) and stream_order.csv (the same with each frame's
session, object, frame number, class and path), base_init/, and the ImageNet script's per-point
files named by training frames seen (accuracies_samples_seen_<n>.json,
preds_samples_seen_<n>.pth, remind_model/remind_classifier_F_<n>.pth,
remind_model/remind_state_<n>.pt), results.json (each evaluation with ``samples_seen`` and
``max_class``, the number of classes seen so far), results.csv, accuracy_plot.png, and
checkpoints/latest.pt for ``--resume`` (``--keep_states K`` keeps the last K per-point states). As
for ImageNet, every input is checked before the save dir is written and the disk the run needs is
logged before it starts.
"""
import argparse
import hashlib
import os

import remind  # noqa: F401  (torchvision compatibility)
import numpy as np
import torch

from image_classification_experiments import core50_data as c50
from image_classification_experiments import imagenet_data as data
from image_classification_experiments.imagenet_folders import DataError, file_sha256
from image_classification_experiments.stream_eval import EvalCodes, fmt, predict, score
from image_classification_experiments.stream_loop import (PlotSpec, Segment, StreamRun, open_run_folder, run_stream,
                                                          start_run)
from image_classification_experiments.stream_model import (add_step_arguments, build_model, check_step_arguments,
                                                           feature_shape, fill_buffer)
from image_classification_experiments.stream_preflight import (base_cache_bytes, check_base_vectors, check_codebooks,
                                                               check_run_flags, log_disk_estimate)
from image_classification_experiments.stream_state import add_state_arguments, fresh_state, resume_latest
from remind import feature_store as fs
from remind.checkpoint import atomic_write
from remind.networks import NetworkError, block_after, freeze, load_resnet_weights, read_state_dict, split_resnet
from remind.offline import OfflineConfig, train_offline
from remind.runtime import add_run_arguments, configure_tf32, default_device, fingerprint, run_cli, write_csv

KIND = "remind_core50_stream"
# Settings that define the run (with the digest of the ordered training frames, ``stream_digest``).
RUN_DEFINING = ("weights", "weights_sha256", "extract_features_from", "classifier", "num_classes", "ordering",
                "seed", "frame_step", "base_init_fraction", "eval_fraction", "train_sessions", "test_sessions",
                "image_size", "num_codebooks", "codebook_size", "max_train_vectors", "base_init_epochs",
                "base_init_lr", "base_init_batch_size", "rehearsal_samples", "max_buffer_size", "lr_mode",
                "lr_step_size", "start_lr", "end_lr", "samples_per_class", "weight_decay",
                "random_resized_crops", "use_mixup", "mixup_alpha", "stream_digest", "latent_codec")
WEIGHTS_HELP = "none (random init), imagenet (torchvision's IMAGENET1K_V1) or a ResNet-18 state_dict file"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_core50_arguments(p)
    add_step_arguments(p, samples_per_class=600)
    add_run_arguments(p, checkpoints=True, checkpoint_interval=1000)
    add_state_arguments(p)  # --keep_states
    args = p.parse_args(argv)
    args.save_dir = args.save_dir or os.path.join("streaming_experiments", args.expt_name)
    args.device = args.device or default_device()
    validate_args(args)
    return args


def add_core50_arguments(p):
    """The data set, the protocol, the backbone, base init and the run's files."""
    p.add_argument("--images_dir", "--core50_dir", dest="images_dir", required=True,
                   help="the unpacked core50_128x128 folder (s1..s11)")
    p.add_argument("--expt_name", default="remind_core50")
    p.add_argument("--save_dir", default=None, help="default: streaming_experiments/<expt_name>")
    p.add_argument("--ordering", choices=c50.ORDERINGS, default="iid")
    p.add_argument("--frame_step", type=int, default=c50.DEFAULT_FRAME_STEP, help="every N-th frame (20: 1 fps)")
    p.add_argument("--base_init_fraction", type=float, default=c50.DEFAULT_BASE_FRACTION,
                   help="share of the ordered stream used for base initialisation")
    p.add_argument("--eval_fraction", type=float, default=c50.DEFAULT_EVAL_FRACTION,
                   help="evaluate after every this share of the training frames")
    p.add_argument("--train_sessions", type=c50.parse_sessions, default=list(c50.TRAIN_SESSIONS))
    p.add_argument("--test_sessions", type=c50.parse_sessions, default=list(c50.TEST_SESSIONS))
    p.add_argument("--num_classes", type=int, default=None, help="default: the classes in the tree (10)")
    p.add_argument("--weights", default="imagenet", help=WEIGHTS_HELP)
    p.add_argument("--image_size", type=int, default=128, help="frames are resized to this (128: as stored)")
    p.add_argument("--max_train_vectors", type=int, default=262144, help="vectors the PQ is fitted on (0: all)")
    p.add_argument("--base_init_epochs", type=int, default=10, help="epochs of F on the base-init codes (0: none)")
    p.add_argument("--base_init_lr", type=float, default=0.01, help="their starting lr (cosine to 0)")
    p.add_argument("--base_init_batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=8)
    p.add_argument("--skip_corrupt_images", action="store_true", help="skip (and count) unreadable frames")
    p.add_argument("--resume", action="store_true",
                   help="continue from <save_dir>/checkpoints/latest.pt (starts afresh if absent)")


def validate_args(args):
    data.check_image_size(args.image_size)
    check_step_arguments(args)
    if args.weights not in ("none", "imagenet") and not os.path.isfile(args.weights):
        raise DataError(f"--weights {args.weights}: not none, imagenet or a file")
    args.weights_sha256 = file_sha256(args.weights) if os.path.isfile(args.weights) else None
    if args.base_init_epochs < 0 or args.base_init_batch_size < 1 or not args.base_init_lr > 0:
        raise DataError("need --base_init_epochs >= 0, --base_init_batch_size >= 1 and --base_init_lr > 0")
    if args.frame_step < 1:
        raise DataError(f"--frame_step must be at least 1, got {args.frame_step}")
    check_run_flags(args)


# ---------------------------------------------------------------------------- the network
def imagenet_state_dict():
    """torchvision's ImageNet ResNet-18 weights (downloaded once into torch's cache)."""
    import torchvision

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except (OSError, RuntimeError) as err:
        raise NetworkError(f"--weights imagenet: cannot fetch {weights.url} ({str(err).splitlines()[0]}); "
                           "download it and pass --weights PATH") from None


def core50_network(args, num_classes):
    """(G frozen, F) of a ResNet-18 with ``--weights`` and a fresh ``num_classes``-way fc."""
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if args.weights != "none":
        state = imagenet_state_dict() if args.weights == "imagenet" else read_state_dict(args.weights)
        # The fc is the new one: every other tensor must load (names and shapes checked).
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("fc.")})
        load_resnet_weights(model, state, args.weights)
    g, f = split_resnet(model, block_after(args.extract_features_from))
    return freeze(g), f


# ------------------------------------------------------------------------------ the data
def load_frames(args):
    """(train, test, stream order, base count, evaluation points) of the protocol."""
    train, test = c50.load_core50(args.images_dir, args.train_sessions, args.test_sessions, args.frame_step,
                                  args.num_classes)
    order = c50.stream_order(train, args.ordering, args.seed)
    base, points = c50.protocol_points(len(train), args.base_init_fraction, args.eval_fraction)
    return train, test, order, base, points


def stream_digest(train, order):
    """sha256 of the ordered training frames' paths: a resume over another tree is refused."""
    h = hashlib.sha256()
    for i in order:
        h.update(os.path.relpath(train.paths[i], train.root).encode() + b"\n")
    return h.hexdigest()


def write_stream_order(save_dir, train, order):
    """stream_order.npy and stream_order.csv: the exact order of the training frames used."""
    with atomic_write(os.path.join(save_dir, "stream_order.npy")) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, order)
    rows = [(pos, int(i), int(train.session[i]), int(train.object[i]), int(train.frame[i]), int(train.label[i]),
             os.path.relpath(train.paths[i], train.root)) for pos, i in enumerate(order)]
    write_csv(os.path.join(save_dir, "stream_order.csv"), rows,
              header=["position", "sample_index", "session", "object", "frame", "label", "path"])


# ---------------------------------------------------------------------- base initialisation
def write_base_features(model, train, indices, args, tally, path):
    """G's feature maps of the base-init frames (stream order) as a feature store (NHWC)."""
    ds = c50.Core50Dataset(train, indices, c50.eval_transform(args.image_size), mark_unreadable=True)
    loader = data.make_loader(ds, args.batch_size, args.num_workers, pin_memory=model.device.type == "cuda")
    batches = ((x, {} if x is None else {"labels": y, "indices": idx}, bad) for x, y, idx, bad in loader)
    fs.write_feature_store(model.g, batches, path, len(ds), device=model.device, unreadable=tally,
                           progress={"auto": None, "on": True, "off": False}[args.progress], desc="base features")


def fit_base_codes(model, args, folder, log):
    """PQ fitted on the base-init features, and their codes; returns (pq file, codes file)."""
    pq_file, codes_file = os.path.join(folder, "pq.npz"), os.path.join(folder, "base_init_codes.h5")
    with fs.open_feature_store(os.path.join(folder, "base_init_features.h5"), columns=("labels", "indices")) as store:
        n, h, w, c = store.shape
        if n * h * w < args.codebook_size:
            raise DataError(f"{n} base-init frames give {n * h * w} vectors; the quantizer needs at least "
                            f"--codebook_size = {args.codebook_size} (raise --base_init_fraction)")
        x = fs.sample_vectors(store, args.max_train_vectors, args.seed)
        pq = fs.fit_quantizer(x, args.num_codebooks, int(np.log2(args.codebook_size)), args.seed, model.device)
        pq.save(pq_file)
        fs.encode_store(pq, store, codes_file, columns=("labels", "indices"))
    log(f"base init: PQ d={c} M={args.num_codebooks} k={args.codebook_size} on {len(x)} vectors of {n} frames")
    return pq_file, codes_file


def train_f(model, codes, labels, args, log):
    """F (plastic blocks + the new fc) trained offline on the decoded base-init codes."""
    if args.base_init_epochs == 0:
        return
    config = OfflineConfig(epochs=args.base_init_epochs, batch_size=args.base_init_batch_size,
                           lr=args.base_init_lr, weight_decay=args.weight_decay, schedule="cosine", seed=args.seed)
    train_offline(model.f, codes, labels, model.quantizer, config, model.device,
                  progress=lambda e, n, loss: log(f"base init: F epoch {e}/{n} loss {loss:.4f}"))
    model.f.train()  # train_offline leaves it in eval mode; the stream trains it


def base_initialize(run, model, train, indices):
    """Features -> PQ -> codes -> buffer, then F trained on the codes."""
    args, folder = run.args, os.path.join(run.save_dir, "base_init")
    write_base_features(model, train, indices, args, run.tally, os.path.join(folder, "base_init_features.h5"))
    codes, labels = fill_buffer(model, *fit_base_codes(model, args, folder, run.log), run.log,
                                stream_items=sum(len(s.indices) for s in run.segments))
    train_f(model, codes, labels, args, run.log)


# ------------------------------------------------------------------------------ the stream
class Core50Stream:
    """The ordered CORe50 frames as the runner's stream, and the whole test set at every point."""

    def __init__(self, args, train, test, order, base, tally):
        self.args, self.train, self.order, self.base = args, train, order, base
        self.test = EvalCodes(lambda lo, hi: c50.Core50Dataset(test, None, c50.eval_transform(args.image_size),
                                                               mark_unreadable=True),
                              0, args, tally, what="test frames")

    def segments(self, points):
        return [Segment(a, b, self.order[a:b], f"{a}-{b}") for a, b in zip(points, points[1:])]

    def dataset_for(self, segment):
        return c50.Core50Dataset(self.train, segment.indices, c50.eval_transform(self.args.image_size),
                                 mark_unreadable=True)

    def classes_up_to(self, n):
        return np.unique(self.train.label[self.order[:n]])

    def evaluate(self, model, samples_seen):
        codes, targets = self.test.upto(model, 1)
        probs = predict(model, codes, self.args)
        seen = torch.from_numpy(np.isin(targets.numpy(), self.classes_up_to(samples_seen)))
        base = torch.from_numpy(np.isin(targets.numpy(), self.classes_up_to(self.base)))
        groups = (("seen_classes", seen), ("base_classes", base), ("non_base_classes", seen & ~base),
                  ("all_classes", torch.ones_like(seen)))
        return probs, {"samples_seen": int(samples_seen), "max_class": len(self.classes_up_to(samples_seen)),
                       **score(probs, targets, groups)}

    def describe(self, result):
        n, k = result["samples_seen"], result["max_class"]
        head = "after base init: " if n == self.base else ""
        return (f"{head}{n} frames seen ({k} classes): all top1={fmt(result['all_classes_top1'])} "
                f"top5={fmt(result['all_classes_top5'])} | seen top1={fmt(result['seen_classes_top1'])} "
                f"| base top1={fmt(result['base_classes_top1'])} | new top1={fmt(result['non_base_classes_top1'])}")


def stream_run(args, log, tally, frames):
    """The CORe50 stream as a ``StreamRun``."""
    train, test, order, base, points = frames
    stream = Core50Stream(args, train, test, order, base, tally)
    settings = {**vars(args), "stream_digest": stream_digest(train, order)}
    extra = {"ordering": args.ordering, "seed": args.seed, "num_train_frames": len(train),
             "num_test_frames": len(test), "base_init_frames": base, "evaluation_points": points,
             "class_order": c50.first_appearance(train.label[order]), "stream_order": "stream_order.npy"}
    return StreamRun(
        args=args, log=log, tally=tally, kind=KIND, run_fingerprint=fingerprint(settings, RUN_DEFINING),
        segments=stream.segments(points), base_point=base, dataset_for=stream.dataset_for,
        evaluate=stream.evaluate, describe=stream.describe,
        point_files=lambda r: (f"samples_seen_{r['samples_seen']}", r["samples_seen"]),
        point_keys=("samples_seen", "max_class"), results_extra=extra,
        plot=PlotSpec("samples_seen", "training frames seen", (
            ("all_classes_top1", "all top-1"), ("all_classes_top5", "all top-5"),
            ("seen_classes_top1", "seen top-1"), ("base_classes_top1", "base top-1"))),
        table=(("frames_seen", "samples_seen"), ("classes", "max_class"), ("all_top1", "all_classes_top1"),
               ("all_top5", "all_classes_top5"), ("seen_top1", "seen_classes_top1"),
               ("base_top1", "base_classes_top1")),
        base_items=base, eval_items=lambda point: len(test))


def prepare_stream(args, argv):
    """Everything before the run writes a file: the frames read and ordered, the stream, and the
    model (G, F, an unfitted quantizer). Returns (run, model, frames, config: the settings as parsed)."""
    config = dict(vars(args))
    device, log = start_run(args, argv)
    tally = data.UnreadableTally(args.skip_corrupt_images)
    frames = load_frames(args)
    train, test, order, base, points = frames
    args.num_classes = args.num_classes or max(train.classes) + 1
    log(f"CORe50: {len(train)} training frames ({args.ordering}), {len(test)} test frames, {args.num_classes} "
        f"classes; base init on the first {base}, evaluations at {points}")
    run = stream_run(args, log, tally, frames)
    g, f = core50_network(args, args.num_classes)
    channels, side = feature_shape(g, args.image_size)
    check_codebooks(channels, args, f"G's channels at --extract_features_from {args.extract_features_from}:")
    model = build_model(args, g, f, args.num_classes, channels, side, device)
    return run, model, frames, config


def open_files(run, frames, config, resumed):
    """The run folder (log.txt, config.json) and the stream order, once every input is checked."""
    open_run_folder(run.args, run.log, config, resumed)
    write_stream_order(run.save_dir, frames[0], frames[2])


def open_stream(args, argv):
    """Everything before base initialisation (also the baselines' start, ``baseline_families``):
    ``prepare_stream`` and the run folder opened. Returns (run, model, frames)."""
    run, model, frames, config = prepare_stream(args, argv)
    open_files(run, frames, config, resumed=False)
    return run, model, frames


def main(argv=None):
    args = parse_args(argv)
    configure_tf32(args.tf32)  # TF32 off unless --tf32: the paper's numbers are fp32
    run, model, frames, config = prepare_stream(args, argv)
    train, _, order, base, _ = frames
    state = resume_latest(run, model)  # reads only: a state made with other settings stops here
    if state is None:
        check_base_vectors(base, model, args)
    channels = model.quantizer.d
    log_disk_estimate(run, model, cache_bytes=0 if state else base_cache_bytes(base, model, channels))
    open_files(run, frames, config, resumed=state is not None)
    if state is None:
        base_initialize(run, model, train, order[:base])
    return run_stream(run, model, state or fresh_state(run), state is None)


if __name__ == "__main__":
    run_cli(main, prog="core50_experiment.py")
