"""Same-run comparison of a whole streamed class: ``REMINDModel.fit_sample`` vs the reference's step.

The step table times stages; this times what a user waits for. For each map size (2 x 2 and
7 x 7), both sides start from the same F weights (two copies), the same quantizer and a full buffer
holding the same items, and stream the same new samples of one class: ours encodes each map with
``quantizer.encode_maps`` and calls ``fit_sample``; the reference side is ``ReferenceStep`` (faiss
on the host, dict gather, per-tensor interpolate, list bookkeeping). Both run under the process's
thread setting (``--threads`` for torch and faiss); ``fit_sample`` drops its small stages to one
thread, as it always does, the reference has no such switch.

After ``CLASS_WARMUP`` samples of another class per side (ours needs two to reach its speed),
the sides take turns in blocks of ``CLASS_BLOCK`` samples, so the load of a shared CPU hits both
alike. CUDA is synchronised at the ends of each block only, so a side pays inside a block just the
waits for the device its own step makes (the reference's host copies and ``loss.item()``). A
side's class wall time is the sum of its blocks. The 7 x 7 rates project the wall time of the
streamed part of ImageNet.
"""
import copy
import sys
import time

import torch

from benchmarks.measure import device_sync
from benchmarks.reference_stream import ReferenceStep
from benchmarks.step_shape import C, IMAGENET_STREAM_SAMPLES, NUM_CLASSES, NUM_REPLAY, fill_buffer, make_quantizer
from remind.model import REMINDModel, StreamingConfig
from remind.networks import build_resnet18_split

CLASS_MAP_SIZES = (2, 7)  # H = W of the latent maps compared
CLASS_BLOCK = 10  # samples per turn of a side
CLASS_WARMUP = 2  # unmeasured samples per side and map size
STREAMED_CLASS, WARMUP_CLASS = NUM_CLASSES - 1, NUM_CLASSES - 2


def _build_sides(map_size, buffer_size, seed, device, channels_last=False):
    """(ours, reference): the two sides on identical copies of one seeded F, one quantizer, one full
    buffer (the reference copies its items into its dict before ours adds to it)."""
    torch.manual_seed(seed)
    _, f = build_resnet18_split(checkpoint=None, first_plastic_block="layer4.1", num_classes=NUM_CLASSES)
    pq = make_quantizer(device, seed)
    buf = fill_buffer(buffer_size, device, seed + buffer_size, map_size=map_size)
    ref = ReferenceStep(copy.deepcopy(f), pq, buf, device, seed)
    config = StreamingConfig(num_replay=NUM_REPLAY, mixup=True, channels_last=channels_last)
    ours = REMINDModel(None, copy.deepcopy(f), pq, buf, NUM_CLASSES, config, device=device, seed=seed)
    return ours, ref


def _ours_step(model):
    """Our step for a new [1, C, H, W] map: encode on the model's device (as the step table), fit."""
    def step(fmap, label, item_id):
        model.fit_sample(model.quantizer.encode_maps(fmap)[0], label, item_id)
    return step


def stream_one_size(map_size, samples, buffer_size, seed, device, warmup=CLASS_WARMUP, channels_last=False):
    """Warm-up, then ``samples`` new samples of one class through each side, interleaved in blocks.
    Returns the row {map, samples, buffer, ours_s, ref_s, ours_sps, ref_sps, ratio}."""
    sync = device_sync(device)
    ours, ref = _build_sides(map_size, buffer_size, seed, device, channels_last)
    gen = torch.Generator().manual_seed(seed + 17 + map_size)
    maps = torch.rand(warmup + samples, C, map_size, map_size, generator=gen).to(device)
    steps = {"ours": _ours_step(ours), "reference": ref}
    ids = range(buffer_size, buffer_size + warmup + samples)  # after the buffer's ids 0..size-1
    for step in steps.values():
        for i in range(warmup):
            step(maps[i:i + 1], WARMUP_CLASS, ids[i])
    wall = {"ours": 0.0, "reference": 0.0}
    for turn, start in enumerate(range(warmup, warmup + samples, CLASS_BLOCK)):
        stop = min(start + CLASS_BLOCK, warmup + samples)
        order = ("ours", "reference") if turn % 2 == 0 else ("reference", "ours")
        for name in order:
            sync()
            t0 = time.perf_counter()
            for i in range(start, stop):
                steps[name](maps[i:i + 1], STREAMED_CLASS, ids[i])
            sync()
            wall[name] += time.perf_counter() - t0
    # Every add evicted: both buffers are still at capacity.
    assert len(ours.buffer) == buffer_size and len(ref.book.ids) == buffer_size
    ours_sps, ref_sps = samples / wall["ours"], samples / wall["reference"]
    return {"map": map_size, "samples": samples, "buffer": buffer_size, "ours_s": wall["ours"],
            "ref_s": wall["reference"], "ours_sps": ours_sps, "ref_sps": ref_sps, "ratio": ours_sps / ref_sps}


def compare_class_stream(samples_per_size, buffer_size, seed, device, map_sizes=CLASS_MAP_SIZES,
                         warmup=CLASS_WARMUP, channels_last=False):
    """Rows for every map size and the projected ImageNet stream time from the 7 x 7 (or largest) row.
    ``samples_per_size``: {map size: samples of the streamed class}; ``channels_last``: our side's
    memory order (the reference's F is NCHW, as it was)."""
    rows = []
    for map_size in map_sizes:
        t0 = time.perf_counter()
        rows.append(stream_one_size(map_size, samples_per_size[map_size], buffer_size, seed, device, warmup,
                                    channels_last))
        print(f"streamed a class of {samples_per_size[map_size]} at {map_size}x{map_size} on both sides in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    big = max(rows, key=lambda r: r["map"])
    projection = {"samples": IMAGENET_STREAM_SAMPLES, "map": big["map"],
                  "ours_h": IMAGENET_STREAM_SAMPLES / big["ours_sps"] / 3600,
                  "ref_h": IMAGENET_STREAM_SAMPLES / big["ref_sps"] / 3600}
    return {"buffer": buffer_size, "warmup": warmup, "block": CLASS_BLOCK, "rows": rows,
            "projection": projection, "channels_last": channels_last}
