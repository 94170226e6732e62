"""The streaming run shared by the image-classification scripts.

A stream is a list of segments, each an array of sample indices streamed in that order, with an
evaluation after each (ImageNet: its class chunks in ImageFolder order; CORe50: the ordered frames
between two protocol points). A family describes its stream as a ``StreamRun`` (segments, a
dataset for a segment, an evaluation at a point, how its files and plots are named) and
``run_stream`` does the rest: one ``REMINDModel.fit_sample`` per image, evaluations and their
files, checkpoints on the ``CheckpointClock``, and the stop/resume points, the same for every
family.
"""
import dataclasses
import os
import time
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm import tqdm

from image_classification_experiments.imagenet_folders import DataError
from image_classification_experiments.stream_eval import encode_batches
from image_classification_experiments.stream_outputs import print_table, write_outputs
from image_classification_experiments.stream_state import CheckpointClock, run_time, save_latest
from remind.runtime import (StartupLog, command_line, progress_disabled, resolve_device, seed_everything,
                            set_cpu_threads, write_json)
from remind.stage_times import StageTimes, device_sync


# Flags that only steer one process of a run: not in config.json (a resumed run's is the same).
PER_PROCESS_FLAGS = ("resume", "stop_after_steps", "progress", "num_threads", "checkpoint_interval",
                     "checkpoint_interval_min")


@dataclasses.dataclass
class Segment:
    """Training items streamed between two evaluations: ``indices`` (sample indices, in stream
    order) from key ``start`` up to key ``end``, where the next segment starts."""

    start: int
    end: int
    indices: np.ndarray
    label: str = ""


@dataclasses.dataclass
class PlotSpec:
    x_key: str
    x_label: str
    series: tuple  # ((result key, legend label), ...)


@dataclasses.dataclass
class StreamRun:
    """What a family hands the runner.

    dataset_for(segment) -> Dataset of ``(image, label, sample index)`` in the segment's order.
    evaluate(model, point) -> (probs, result dict); ``point`` is a segment's end (or base_point);
    ``probs``: the softmax tensor, or with ``label_space`` a dict of "probs", "targets" and
    "sample_indices" (the point's files are then written in the reference's label space too,
    ``reference_layout``).
    describe(result) -> the point's log line.
    point_files(result) -> (tag, key) naming the point's files (``stream_outputs``).
    """

    args: object
    log: Callable
    tally: object
    kind: str
    run_fingerprint: dict
    segments: list
    base_point: int
    dataset_for: Callable
    evaluate: Callable
    describe: Callable
    point_files: Callable
    point_keys: tuple
    plot: PlotSpec
    table: tuple  # ((header, result key), ...): the final table, the first column a point key
    results_extra: dict = dataclasses.field(default_factory=dict)
    label_space: object = None  # a reference_layout.ReferenceSpace, or None
    base_items: int = 0  # base-init items for the buffer, and evaluation images at a point: the disk
    eval_items: Callable = lambda point: 0  # estimate (``stream_preflight``)

    save_dir = property(lambda self: self.args.save_dir)
    checkpoint_interval = property(lambda self: self.args.checkpoint_interval)
    checkpoint_interval_min = property(lambda self: self.args.checkpoint_interval_min)
    stop_after_steps = property(lambda self: self.args.stop_after_steps)

    @property
    def end(self):
        return self.segments[-1].end if self.segments else self.base_point

    def segment_at(self, start):
        for segment in self.segments:
            if segment.start == start:
                return segment
        raise DataError(f"the saved state continues at {start}, which starts no segment of this stream")


def start_run(args, argv):
    """Device, threads, seeds and the (startup) log: the start of every stream script. Nothing
    is written until ``open_run_folder``."""
    device = resolve_device(args.device)
    set_cpu_threads(args.num_threads)
    log = StartupLog()
    seed_everything(args.seed)
    log(f"$ {command_line(argv)}")
    return device, log


def open_run_folder(args, log, config, resumed):
    """Once every input is checked: the save dir, log.txt and config.json (``config``: the
    settings as parsed, less the flags that only steer one process). A run resumed from a
    checkpoint keeps the config.json it started with."""
    log.open(args.save_dir)
    path = os.path.join(args.save_dir, "config.json")
    if not (resumed and os.path.exists(path)):
        write_json(path, {k: v for k, v in config.items() if k not in PER_PROCESS_FLAGS})


def open_run(args, argv):
    """``start_run`` and ``open_run_folder`` at once (a script with nothing to check between)."""
    config = dict(vars(args))
    device, log = start_run(args, argv)
    open_run_folder(args, log, config, resumed=False)
    return device, log


def stream_segment(run, model, segment, state, clock, stages):
    """Stream one segment from state['offset'] on; returns False when told to stop early."""
    ds = run.dataset_for(segment)
    if len(ds) != len(segment.indices):
        raise DataError(f"segment {segment.label}: {len(ds)} items, expected {len(segment.indices)}")
    todo = Subset(ds, range(state["offset"], len(ds)))
    bar = tqdm(total=len(ds), initial=state["offset"], desc=f"stream {segment.label}", unit="img",
               dynamic_ncols=True, disable=progress_disabled(run.args))
    # Position in the segment after each item; skipped (unreadable) images are passed over with it.
    sorter = np.argsort(segment.indices, kind="stable")
    loss_sum, loss_n = torch.zeros((), device=model.device), 0
    batches = encode_batches(model, todo, run.args, run.tally, "stream")
    for codes, y, idx in stages.timed("stream images (load, G, PQ)", batches):
        after = sorter[np.searchsorted(segment.indices, idx.numpy(), sorter=sorter)] + 1
        with stages("streaming steps"):
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
                    run.log(f"stopped after {model.steps} streamed samples; continue with --resume")
                    return False
    state["offset"] = len(ds)
    bar.close()
    return True


def record_point(run, model, state, point, stages):
    """Evaluate at ``point``, log it, write its files and the latest checkpoint."""
    with stages("evaluation"):
        probs, result = run.evaluate(model, point)
    run.log(run.describe(result))
    with stages("outputs and checkpoints"):
        write_outputs(run, model, state, probs, result)
        save_latest(run, model, state)


def run_stream(run, model, state, fresh):
    """Evaluate after base init (``fresh``), then stream every segment left, each followed by an
    evaluation; returns the exit status (0, also when stopped by --stop_after_steps)."""
    stages = StageTimes(state.setdefault("stage_seconds", {}), device_sync(model.device))
    if fresh:
        record_point(run, model, state, run.base_point, stages)
    state["since"], clock = time.time(), CheckpointClock(run, stages=stages)
    while state["chunk_start"] < run.end:
        segment = run.segment_at(state["chunk_start"])
        if not stream_segment(run, model, segment, state, clock, stages):
            return 0
        state["chunk_start"], state["offset"] = segment.end, 0
        record_point(run, model, state, segment.end, stages)
    if run.tally.count:
        run.log(run.tally.summary())
    print_table(run, state["history"])
    run.log(stages.summary())
    run.log(f"streaming took {run_time(state):.1f} s (all of the run's processes); results in {run.save_dir}")
    return 0
