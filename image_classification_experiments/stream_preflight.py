"""What a stream script checks and states before it writes anything.

A run that fails on bad input must leave nothing behind, so every check that needs no work
(flags, files, the network's output against the flags) runs before the save dir is created;
``stream_loop.open_run_folder`` comes after them.

- ``check_run_flags(args)``: the flags that only make sense together (replays against the buffer
  cap, mixup's alpha, --keep_states, the checkpoint flags).
- ``check_resume_point(path, flag)``: the state --resume_full_path restarts from exists.
- ``check_codebooks``: the channels split evenly into --num_codebooks.
- ``check_feature_shape(model, args, channels)``: G's maps at --image_size have the channels and
  size the quantizer and the buffer are built for.
- ``check_base_vectors``: enough base-init vectors to fit --codebook_size centroids.
- ``disk_estimate`` / ``log_disk_estimate``: the disk a run will take, from the buffer's item size
  (codes, label, id, slot), F's size, the evaluation points and --keep_states.
"""
import math
import os

import torch

from image_classification_experiments.imagenet_folders import DataError


def check_run_flags(args):
    """Flags that contradict each other, or the buffer, before any work."""
    draws = args.rehearsal_samples * (2 if args.use_mixup else 1)
    if args.max_buffer_size is not None and args.max_buffer_size < draws:
        mixup = " (twice --rehearsal_samples with --use_mixup)" if args.use_mixup else ""
        raise DataError(f"--max_buffer_size {args.max_buffer_size} holds fewer items than the {draws} replays "
                        f"each step draws{mixup}; raise --max_buffer_size or lower --rehearsal_samples")
    if args.use_mixup and not args.mixup_alpha > 0:
        raise DataError(f"--mixup_alpha must be positive with --use_mixup, got {args.mixup_alpha}")
    if getattr(args, "keep_states", None) is not None and args.keep_states < 0:
        raise DataError(f"--keep_states must be >= 0 (0: no per-point states), got {args.keep_states}")
    if args.checkpoint_interval < 0 or args.checkpoint_interval_min < 0:
        raise DataError("--checkpoint_interval and --checkpoint_interval_min must be >= 0 (0: off)")
    if args.stop_after_steps is not None and args.stop_after_steps < 1:
        raise DataError(f"--stop_after_steps must be at least 1, got {args.stop_after_steps}")
    if getattr(args, "max_per_class", None) is not None and args.max_per_class < 1:
        raise DataError(f"--max_per_class must be at least 1, got {args.max_per_class}")
    if args.batch_size < 1 or args.num_workers < 0:
        raise DataError("need --batch_size >= 1 and --num_workers >= 0")


def check_resume_point(path, flag):
    """The per-point state a restart needs (it may have been removed by --keep_states)."""
    if not os.path.isfile(path):
        raise DataError(f"{flag}: no state {path} to restart from (the run must have reached that point, "
                        "and kept its state: see --keep_states)")


def check_codebooks(channels, args, what):
    """The quantizer splits each ``channels``-dim vector into --num_codebooks equal parts."""
    if channels % args.num_codebooks:
        raise DataError(f"{what} {channels} is not divisible by --num_codebooks {args.num_codebooks} "
                        "(each codebook quantizes an equal share of the channels)")


@torch.no_grad()
def check_feature_shape(model, args, channels):
    """G's maps at --image_size must have the ``channels`` and the size the quantizer and the
    buffer are built for; a mismatch would otherwise show only mid-stream. (G is in eval mode:
    one pass of zeros changes nothing.)"""
    side = model.buffer.code_shape[0]
    out = model.g(torch.zeros(1, 3, args.image_size, args.image_size, device=model.device))
    if out.shape[1] != channels:
        raise DataError(f"--num_channels {channels}: G (up to {args.extract_features_from}) gives "
                        f"{out.shape[1]} channels")
    if tuple(out.shape[2:]) != (side, side):
        raise DataError(f"--spatial_feat_dim {side}: G gives {out.shape[2]} x {out.shape[3]} maps at "
                        f"--image_size {args.image_size}")


def check_base_vectors(items, model, args):
    """A base initialisation that fits the quantizer needs at least --codebook_size vectors (one per
    map position of each base-init image); known before the features are extracted."""
    side = model.buffer.code_shape[0]
    if items * side * side < args.codebook_size:
        raise DataError(f"{items} base-init images give {items * side * side} vectors ({side} x {side} per map); "
                        f"the quantizer needs at least --codebook_size = {args.codebook_size}")


# ---------------------------------------------------------------------------- disk use
def _module_bytes(module):
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def item_bytes(buffer):
    """Bytes one buffer item takes in a saved state: codes, label and id (int64), slot (int32)."""
    return math.prod(buffer.code_shape) * buffer.code_dtype.itemsize + 20


def disk_estimate(run, model, base_items, eval_items, cache_bytes=0):
    """{kind: bytes} the run writes: per-point F files, states, predictions, latest.pt (two
    versions) and the base-init cache. ``eval_items(point)``: evaluation images at a point."""
    cap = model.buffer.capacity or math.inf  # --max_buffer_size (or a latent codec's equal-memory cap)
    points, items, streamed = [run.base_point], [min(base_items, cap)], base_items
    for segment in run.segments:
        streamed += len(segment.indices)
        points.append(segment.end)
        items.append(min(streamed, cap))
    # F's weights, and from the first step on SGD's momentum of each
    f_files = [_module_bytes(model.f) * (1 if i == 0 else 2) for i in range(len(points))]
    quantizer = model.quantizer.d * getattr(model.quantizer, "ksub", 256) * 4  # float32 centroids
    states = [n * item_bytes(model.buffer) + f + quantizer for n, f in zip(items, f_files)]
    keep = getattr(run.args, "keep_states", None)
    # States grow with the buffer; --keep_states K holds the K newest and, until it prunes, one more.
    kept = sum(states) if keep is None else sum(sorted(states)[-(keep + 1):]) if keep else 0
    return {"points": len(points), "F": sum(f_files), "states": kept, "state_max": max(states),
            "preds": sum(eval_items(p) * model.num_classes * 4 for p in points), "latest": 2 * max(states),
            "cache": cache_bytes}


def base_cache_bytes(items, model, channels):
    """The base-init cache a run makes: float32 feature maps and their codes."""
    side = model.buffer.code_shape[0]
    return items * (side * side * channels * 4 + item_bytes(model.buffer))


def log_disk_estimate(run, model, cache_bytes=0):
    """One log line, before the run starts: the disk it will need, and what --keep_states does."""
    d = disk_estimate(run, model, run.base_items, run.eval_items, cache_bytes)
    total = d["F"] + d["states"] + d["preds"] + d["latest"] + d["cache"]
    keep = getattr(run.args, "keep_states", None)
    kept = ("all kept" if keep is None else "none kept" if keep == 0 else f"the last {keep} kept") + \
        f": {human(d['states'])}" + ("; --keep_states K keeps only the last K" if keep is None else "")
    run.log(f"disk: this run needs about {human(total)} in {run.save_dir}: {d['points']} evaluation points, "
            f"each with an F file (all: {human(d['F'])}) and a state of up to {human(d['state_max'])} ({kept}), "
            f"predictions {human(d['preds'])}, checkpoints/latest.pt and its previous version {human(d['latest'])}"
            + (f", the base-init cache {human(d['cache'])}" if d["cache"] else ""))
    return d


def human(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
