"""REMIND class-incremental streaming on an ImageNet-style folder tree.

Base initialisation puts the PQ codes of every base-init training image in the replay buffer (from
the cache written by extract_features.py and fit_pq.py; computed here when absent). Then the
remaining classes stream in ``--class_increment`` chunks, one image at a time, in ImageFolder
order. After base init and after each chunk, one prediction pass over the val images of all seen
classes gives top-1/top-5 on the seen, base and non-base classes.

Outputs in ``--save_dir``: config.json, log.txt, the reference's per-point files
(accuracies_min_trained_<a>_max_trained_<b>.json, preds_min_trained_<a>_max_trained_<b>.pth,
remind_model/remind_classifier_F_<b>.pth, and remind_model/remind_state_<b>.pt, the whole run
state in place of the reference's pickled buffer), results.json, results.csv, accuracy_plot.png,
and checkpoints/latest.pt (with the one before it, latest.1.pt), from which ``--resume`` continues
exactly where the run stopped.

Run states (latest.pt, remind_state_<b>.pt) are run checkpoints of kind ``remind_ic_stream``
(``remind.runtime``): the model (F, optimizer, buffer, quantizer, per-class counts, its own
generators), the evaluations so far, the position in the stream and every global generator, with
the fingerprint of the run-defining settings (``RUN_DEFINING``); a resume with other values of
those is refused. States of the previous version (no format) are still read.
"""
import argparse
import os
import re
import time

import remind  # noqa: F401  (torchvision compatibility)
import numpy as np
import torch
from torch.utils.data import Subset
from tqdm import tqdm

from remind.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from remind.errors import InputError
from remind.metrics import topk_accuracy
from remind.model import REMINDModel, StreamingConfig
from remind.networks import block_after, build_resnet18_split
from remind.quantizer import ProductQuantizer
from remind.replay_buffer import ReplayBuffer
from remind.runtime import (RunLog, add_run_arguments, capture_rng, command_line, default_device, fingerprint,
                            load_run_checkpoint, progress_disabled, resolve_device, restore_rng, run_cli,
                            save_run_checkpoint, seed_everything, set_cpu_threads, write_csv)

from image_classification_experiments import imagenet_data as data
from image_classification_experiments.base_init_cache import ensure_base_init_cache
from remind.runtime import write_json
from image_classification_experiments.imagenet_folders import DataError

LATEST = os.path.join("checkpoints", "latest.pt")
KIND = "remind_ic_stream"  # the run checkpoints' format (latest.pt and remind_model/remind_state_<b>.pt)
# Settings that define the run: a resume with other values would silently mix two experiments.
RUN_DEFINING = ("classifier_ckpt", "extract_features_from", "classifier", "num_classes", "min_class",
                "base_init_classes", "class_increment", "streaming_max_class",
                "num_codebooks", "codebook_size", "rehearsal_samples", "max_buffer_size", "lr_mode",
                "lr_step_size", "start_lr", "end_lr", "samples_per_class", "weight_decay",
                "random_resized_crops", "use_mixup", "mixup_alpha", "image_size", "seed",
                "max_per_class")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_reference_arguments(p)
    add_project_arguments(p)
    args = p.parse_args(argv)
    if args.save_dir is None:
        args.save_dir = os.path.join("streaming_experiments", args.expt_name)
    args.base_init_dir = args.base_init_dir or os.path.join(args.save_dir, "base_init")
    args.device = args.device or default_device()
    args.extract_features_from = args.extract_features_from.removeprefix("model.")
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
                   help="a save dir of an earlier run: restart from its state after --streaming_min_class")
    # network
    p.add_argument("--base_arch", default="ResNet18ClassifyAfterLayer4_1", help="G (ResNet-18 only)")
    p.add_argument("--classifier", default="ResNet18_StartAt_Layer4_1",
                   help="F: ResNet18_StartAt_Layer<i>_<j>, or a block name such as layer4.1")
    p.add_argument("--classifier_ckpt", required=True, help="base-init checkpoint")
    p.add_argument("--extract_features_from", default="model.layer4.0")
    p.add_argument("--num_channels", type=int, default=512)
    p.add_argument("--spatial_feat_dim", type=int, default=None,
                   help="G's output size (default: from --image_size; 7 at 224 px)")
    p.add_argument("--weight_decay", type=float, default=1e-5)
    p.add_argument("--batch_size", type=int, default=128, help="images per G batch")
    p.add_argument("--allow_fc_resize", action="store_true",
                   help="--num_classes differs from the checkpoint's fc: start fc from a random init")
    # product quantizer
    p.add_argument("--num_codebooks", type=int, default=32)
    p.add_argument("--codebook_size", type=int, default=256)
    # replay
    p.add_argument("--rehearsal_samples", type=int, default=50, help="replayed samples per step")
    p.add_argument("--max_buffer_size", type=int, default=None, help="items (default: unlimited)")
    # learning rate
    p.add_argument("--lr_mode", choices=["step_lr_per_class", "constant"], default="step_lr_per_class")
    p.add_argument("--lr_step_size", type=int, default=100)
    p.add_argument("--start_lr", type=float, default=0.1)
    p.add_argument("--end_lr", type=float, default=0.001)
    p.add_argument("--samples_per_class", type=int, default=1300,
                   help="samples over which the per-class lr decays from start_lr to end_lr")
    # augmentation
    p.add_argument("--random_resized_crops", action="store_true")
    p.add_argument("--use_mixup", action="store_true")
    p.add_argument("--mixup_alpha", type=float, default=0.1)
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


def first_plastic_block(classifier):
    """'ResNet18_StartAt_Layer4_1' (the reference's class name) or 'layer4.1' -> 'layer4.1'."""
    m = re.fullmatch(r"ResNet18_StartAt_Layer(\d)_(\d)", classifier)
    return f"layer{m.group(1)}.{m.group(2)}" if m else classifier


def validate_args(args):
    data.check_image_size(args.image_size)
    expected = block_after(args.extract_features_from)
    if first_plastic_block(args.classifier) != expected:
        raise DataError(f"--classifier {args.classifier} must start right after --extract_features_from "
                        f"{args.extract_features_from} (at {expected})")
    if not 0 <= args.min_class < args.base_init_classes <= args.streaming_min_class:
        raise DataError("need 0 <= --min_class < --base_init_classes <= --streaming_min_class")
    if not args.streaming_min_class <= args.streaming_max_class <= args.num_classes:
        raise DataError("need --streaming_min_class <= --streaming_max_class <= --num_classes")
    if args.class_increment < 1:
        raise DataError(f"--class_increment must be positive, got {args.class_increment}")
    if args.rehearsal_samples < 0:
        raise DataError(f"--rehearsal_samples must be >= 0, got {args.rehearsal_samples}")
    if args.max_buffer_size is not None and args.max_buffer_size < 1:
        raise DataError(f"--max_buffer_size must be positive, got {args.max_buffer_size}")
    if args.codebook_size & (args.codebook_size - 1) or not 2 <= args.codebook_size <= 256:
        raise DataError(f"--codebook_size must be a power of two in 2..256, got {args.codebook_size}")
    if not os.path.isfile(args.classifier_ckpt):
        raise DataError(f"--classifier_ckpt {args.classifier_ckpt}: file not found")


# ------------------------------------------------------------------------------- base init
def read_codes(codes_file):
    import h5py

    try:
        with h5py.File(codes_file, "r") as f:
            return (torch.from_numpy(f["codes"][...]), torch.from_numpy(f["labels"][...]),
                    torch.from_numpy(f["indices"][...]))
    except (OSError, KeyError) as err:
        raise DataError(f"{codes_file}: not a codes file from fit_pq.py ({err})") from None


def make_model(args, device):
    """G, F from the checkpoint; the quantizer and buffer come from the base-init cache or a state."""
    g, f = build_resnet18_split(args.classifier_ckpt, block_after(args.extract_features_from),
                                args.num_classes, args.allow_fc_resize)
    side = args.spatial_feat_dim or -(-args.image_size // 32)
    code_shape = (side, side, args.num_codebooks)
    pq = ProductQuantizer(args.num_channels, args.num_codebooks, int(np.log2(args.codebook_size)))
    buffer = ReplayBuffer(code_shape, capacity=args.max_buffer_size, device=device, seed=args.seed + 1)
    config = StreamingConfig(
        num_replay=args.rehearsal_samples, mixup=args.use_mixup, mixup_alpha=args.mixup_alpha,
        latent_crops=args.random_resized_crops, lr_mode=args.lr_mode, start_lr=args.start_lr,
        end_lr=args.end_lr, lr_step_size=args.lr_step_size, samples_per_class=args.samples_per_class,
        weight_decay=args.weight_decay)
    return REMINDModel(g, f, pq, buffer, args.num_classes, config, device=device, seed=args.seed)


def base_initialize(model, args, log):
    pq_file, codes_file = ensure_base_init_cache(args, log)
    model.quantizer = ProductQuantizer.load(pq_file, device=model.device)
    q = model.quantizer
    if (q.d, q.M, q.ksub) != (args.num_channels, args.num_codebooks, args.codebook_size):
        raise DataError(f"{pq_file}: quantizer has d={q.d}, {q.M} codebooks of {q.ksub}; the flags ask for "
                        f"d={args.num_channels}, {args.num_codebooks} of {args.codebook_size}")
    codes, labels, ids = read_codes(codes_file)
    if tuple(codes.shape[1:]) != model.buffer.code_shape:
        raise DataError(f"{codes_file}: codes of shape {tuple(codes.shape[1:])}, expected "
                        f"{model.buffer.code_shape} (check --spatial_feat_dim / --image_size)")
    model.buffer.add_batch(codes, labels, ids)
    log(f"base init: {len(model.buffer)} items in the replay buffer "
        f"({model.buffer.nbytes / 2**20:.1f} MiB), quantizer d={q.d} M={q.M} k={q.ksub}")


# ------------------------------------------------------------------------------ evaluation
class ValCodes:
    """PQ codes of the val images, per class, computed once: G and the quantizer never change,
    so each evaluation is a decode and an F pass (the reference re-ran G four times per point)."""

    def __init__(self, args, samples, labels):
        self.args, self.samples, self.labels = args, samples, labels
        self.codes, self.targets, self.max_class = [], [], args.min_class

    def upto(self, model, max_class, tally):
        if max_class > self.max_class:
            ds = data.ClassRangeDataset(self.samples, self.labels, self.max_class, max_class,
                                        data.val_transform(self.args.image_size), mark_unreadable=True)
            loader = data.make_loader(ds, self.args.batch_size, self.args.num_workers,
                                      pin_memory=model.device.type == "cuda")
            bar = tqdm(total=len(ds), desc=f"val codes {self.max_class}-{max_class - 1}", unit="img",
                       dynamic_ncols=True, leave=False, disable=progress_disabled(self.args))
            for x, y, _ in data.iterate_batches(loader, tally):
                if x is not None:
                    self.codes.append(model.encode_images(x).cpu())
                    self.targets.append(y)
                    bar.update(len(y))
            bar.close()
            self.max_class = max_class
        if not self.codes:
            raise DataError(f"no val images for classes [{self.args.min_class}, {max_class})")
        return torch.cat(self.codes), torch.cat(self.targets)


def evaluate(model, val, args, max_class, tally):
    codes, targets = val.upto(model, max_class, tally)
    probs = model.predict_codes(codes, batch_size=args.batch_size)
    base = targets < args.base_init_classes
    result = {"max_class": max_class}
    for name, mask in (("seen", torch.ones_like(base)), ("base", base), ("non_base", ~base)):
        acc = topk_accuracy(probs[mask], targets[mask], ks=(1, 5))
        result[f"{name}_classes_top1"], result[f"{name}_classes_top5"] = acc[1], acc[5]
    return probs, targets, result


def fmt(v):
    return "  n/a " if v != v else f"{v:6.2f}"


def write_outputs(args, model, state, probs, result):
    """The reference's per-point files plus the run summary (JSON, CSV, plot), all atomic."""
    b, a = result["max_class"], args.min_class
    history = state["history"]
    history.append(result)
    acc_lists = {k: [float(r[k]) for r in history if r[k] == r[k]] for k in result if k != "max_class"}
    write_json(os.path.join(args.save_dir, f"accuracies_min_trained_{a}_max_trained_{b}.json"), acc_lists)
    with atomic_write(os.path.join(args.save_dir, f"preds_min_trained_{a}_max_trained_{b}.pth")) as tmp:
        torch.save(probs, tmp)
    out = os.path.join(args.save_dir, "remind_model")
    save_checkpoint(os.path.join(out, f"remind_classifier_F_{b}.pth"),
                    {"state_dict": model.f.state_dict(), "optimizer": model.optimizer.state_dict()})
    save_state(os.path.join(out, f"remind_state_{b}.pt"), args, model, state, keep=1)
    write_json(os.path.join(args.save_dir, "results.json"),
               {"expt_name": args.expt_name, "evaluations": history,
                "final": history[-1], "buffer_items": len(model.buffer),
                "buffer_bytes": model.buffer.nbytes})
    write_csv(os.path.join(args.save_dir, "results.csv"), history, header=list(result))
    plot(args, history)


def plot(args, history):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["max_class"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("seen_classes_top1", "seen top-1"), ("seen_classes_top5", "seen top-5"),
                       ("base_classes_top1", "base top-1"), ("non_base_classes_top1", "new top-1")):
        ax.plot(x, [r[key] for r in history], marker="o", label=label)
    ax.set_xlabel("classes seen")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"REMIND: {args.expt_name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(os.path.join(args.save_dir, "accuracy_plot.png")) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------- state
def save_state(path, args, model, state, keep=2):
    """The whole run state as a run checkpoint: the model (F, optimizer, buffer, quantizer, its
    generators), the evaluations so far, the position in the stream and every global generator."""
    save_run_checkpoint(path, KIND, fingerprint(args, RUN_DEFINING), {
        "model": model.state_dict(), "history": state["history"], "chunk_start": state["chunk_start"],
        "offset": state["offset"], "rng": capture_rng()}, keep=keep)


def save_latest(args, model, state):
    save_state(os.path.join(args.save_dir, LATEST), args, model, state)


def check_same_run(saved, args, path):
    """Refuse a state made with other run-defining settings (``saved``: their values)."""
    current = fingerprint(args, RUN_DEFINING)
    for k in RUN_DEFINING:
        if k in saved and saved[k] != current[k]:
            raise InputError(f"{path}: saved with --{k} {saved[k]}, now {current[k]}; "
                             "use the original settings or another --save_dir")


def load_state(path, args, model):
    """Restore ``model`` and the generators from a saved state; returns the run's progress.

    States of the previous version of this script (no "format": a "config" of the run-defining
    settings and torch's generator only) are read too."""
    try:
        saved = load_run_checkpoint(path, KIND, map_location=model.device)
        check_same_run(saved["fingerprint"], args, path)
    except CheckpointError:
        saved = load_checkpoint(path, map_location=model.device)
        if not isinstance(saved, dict) or "format" in saved or "config" not in saved:
            raise
        check_same_run(saved["config"], args, path)
    model.load_state_dict(saved["model"])
    if "rng" in saved:
        restore_rng(saved["rng"])
    else:
        torch.set_rng_state(saved["torch_rng"])
    return {"history": list(saved["history"]), "chunk_start": int(saved["chunk_start"]),
            "offset": int(saved["offset"])}


def initial_state(args, model, log):
    """A resumed state, or a fresh one after base initialisation."""
    latest = os.path.join(args.save_dir, LATEST)
    if args.resume and os.path.isfile(latest):
        state = load_state(latest, args, model)
        log(f"resumed from {latest}: chunk {state['chunk_start']}, {state['offset']} samples into it, "
            f"{model.steps} streamed so far")
        return state, False
    if args.resume_full_path is not None:
        path = os.path.join(args.resume_full_path, "remind_model",
                            f"remind_state_{args.streaming_min_class}.pt")
        state = load_state(path, args, model)
        log(f"resumed from {path}: streaming from class {state['chunk_start']}")
        return state, False
    if args.resume:
        log(f"--resume: no checkpoint in {latest}; starting a new run")
    base_initialize(model, args, log)
    return {"history": [], "chunk_start": args.streaming_min_class, "offset": 0}, True


class CheckpointClock:
    """When to save checkpoints/latest.pt inside a chunk: every --checkpoint_interval steps, after
    --checkpoint_interval_min minutes since the last save, and at --stop_after_steps (then stop)."""

    def __init__(self, args, now=time.monotonic):
        self.args, self.now = args, now
        self.last_save = now()

    def after_step(self, model, state):
        """Save when due; True when the run should stop now."""
        args, steps = self.args, model.steps
        stop = args.stop_after_steps is not None and steps >= args.stop_after_steps
        due = bool(args.checkpoint_interval) and steps % args.checkpoint_interval == 0
        due = due or (args.checkpoint_interval_min > 0
                      and self.now() - self.last_save >= 60 * args.checkpoint_interval_min)
        if stop or due:
            save_latest(args, model, state)
            self.last_save = self.now()
        return stop


# ---------------------------------------------------------------------------------- main
def stream_chunk(model, args, train, state, tally, log, clock):
    """Stream one chunk of classes from state['offset'] on; returns False when told to stop early."""
    lo = state["chunk_start"]
    hi = min(lo + args.class_increment, args.streaming_max_class)
    ds = data.ClassRangeDataset(train[0], train[1], lo, hi, data.val_transform(args.image_size),
                                args.max_per_class, mark_unreadable=True)
    todo = Subset(ds, range(state["offset"], len(ds)))
    loader = data.make_loader(todo, args.batch_size, args.num_workers,
                              pin_memory=model.device.type == "cuda")
    bar = tqdm(total=len(ds), initial=state["offset"], desc=f"stream {lo}-{hi - 1}", unit="img",
               dynamic_ncols=True, disable=progress_disabled(args))
    loss_sum, loss_n = torch.zeros((), device=model.device), 0
    for x, y, idx in data.iterate_batches(loader, tally):
        if x is None:  # a batch of unreadable images only (skipped and counted)
            continue
        codes = model.encode_images(x)
        # Position in the chunk after each sample; skipped images are passed over with it.
        after = np.searchsorted(ds.indices, idx.numpy()) + 1
        for i in range(len(y)):
            loss_sum += model.fit_sample(codes[i], int(y[i]), int(idx[i]))
            loss_n += 1
            bar.update(int(after[i]) - state["offset"])
            state["offset"] = int(after[i])
            if loss_n == 50:  # reading the loss syncs a GPU: only now and then, for the bar
                if not bar.disable:
                    bar.set_postfix(cls=int(y[i]), loss=f"{float(loss_sum) / loss_n:.3f}",
                                    buffer=len(model.buffer))
                loss_sum.zero_()
                loss_n = 0
            if clock.after_step(model, state):
                bar.close()
                log(f"stopped after {model.steps} streamed samples; continue with --resume")
                return False
    state["offset"] = len(ds)
    bar.close()
    return True


def evaluate_chunk(model, val, args, state, tally, log):
    """Evaluate after the chunk at state['chunk_start'], write the point's files, move on."""
    hi = min(state["chunk_start"] + args.class_increment, args.streaming_max_class)
    probs, _, result = evaluate(model, val, args, hi, tally)
    log(f"classes {args.min_class}-{hi - 1}: seen top1={fmt(result['seen_classes_top1'])} "
        f"top5={fmt(result['seen_classes_top5'])} | base top1={fmt(result['base_classes_top1'])} "
        f"| new top1={fmt(result['non_base_classes_top1'])}")
    state["chunk_start"], state["offset"] = hi, 0
    write_outputs(args, model, state, probs, result)
    save_latest(args, model, state)


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    set_cpu_threads(args.num_threads)
    os.makedirs(args.save_dir, exist_ok=True)
    log = RunLog(args.save_dir)
    seed_everything(args.seed)
    log(f"$ {command_line(argv)}")
    write_json(os.path.join(args.save_dir, "config.json"), vars(args))
    tally = data.UnreadableTally(args.skip_corrupt_images)
    train = data.load_split(args.images_dir, "train", args.label_dir)[:2]
    val_samples, val_labels, _ = data.load_split(args.images_dir, "val", args.label_dir, args.val_labels_csv)
    val = ValCodes(args, val_samples, val_labels)

    model = make_model(args, device)
    state, fresh = initial_state(args, model, log)
    if fresh:
        probs, _, result = evaluate(model, val, args, args.base_init_classes, tally)
        log(f"after base init (classes {args.min_class}-{args.base_init_classes - 1}): "
            f"top1={result['seen_classes_top1']:.2f}% top5={result['seen_classes_top5']:.2f}%")
        write_outputs(args, model, state, probs, result)
        save_latest(args, model, state)

    t0, clock = time.time(), CheckpointClock(args)
    while state["chunk_start"] < args.streaming_max_class:
        if not stream_chunk(model, args, train, state, tally, log, clock):
            return 0
        evaluate_chunk(model, val, args, state, tally, log)
    if tally.count:
        log(tally.summary())
    print_table(state["history"], log)
    log(f"streaming took {time.time() - t0:.1f} s; results in {args.save_dir}")
    return 0


def print_table(history, log):
    log("classes_seen  seen_top1  seen_top5  base_top1  new_top1")
    for r in history:
        log(f"{r['max_class']:12d}  {fmt(r['seen_classes_top1']):>9}  {fmt(r['seen_classes_top5']):>9}  "
            f"{fmt(r['base_classes_top1']):>9}  {fmt(r['non_base_classes_top1']):>8}")


if __name__ == "__main__":
    run_cli(main, prog="imagenet_experiment.py")
