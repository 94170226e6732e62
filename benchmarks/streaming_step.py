#!/usr/bin/env python
"""Core benchmark: the cost of one REMIND streaming step, stage by stage, at the paper's shape.

Shape (benchmarks/step_shape.py): 1 new sample + 100 replayed codes (mixed pairwise into 50),
512 x 7 x 7 latent maps, PQ with 32 codebooks x 256 centroids (7 x 7 x 32 uint8 = 1,568 B per
item), 1000 classes, F = ResNet-18 layer4.1 + avgpool + fc (remind.networks.build_resnet18_split).
The buffer is pre-filled with random codes (labels uniform over 1000 classes) up to its capacity,
so every step also evicts. The quantizer's centroids are random: encode/decode cost does not
depend on their values, and F's cost does not depend on the data.

Measured per step (medians over steps after warm-up):
  encode    quantizer.encode_maps of the new sample's 512 x 7 x 7 map
  sample    buffer.sample(100) + gather of the codes and labels
  decode    quantizer.decode_maps of the 101 codes
  augment   batched random resized crops of the 101 maps + mixup into 1 + 50
  update_f  F forward + backward + SGD step on the 51 tensors
  buffer_add  buffer.add of the new sample (evicting from the largest class)
Also: buffer.sample(100) + buffer.add on a full buffer (interleaved across sizes in blocks, so the
noise of a shared CPU hits every size alike), buffer memory vs the raw code bytes, and, measured
here, what the reference code's approach costs where it differs (benchmarks/reference_step.py:
per-tensor crops, a dict of per-item arrays, list.remove on a 959,665-item list).
Last, a whole streamed class at 2 x 2 and 7 x 7 maps through fit_sample and through the reference's
step (benchmarks/class_stream.py, benchmarks/reference_stream.py): samples per second of each, their
ratio, and the projected wall time of the full ImageNet stream from the 7 x 7 rates.

    python benchmarks/streaming_step.py                # the default run (make bench)
    python benchmarks/streaming_step.py --quick        # smoke run: tiny sizes, a few steps
    python benchmarks/streaming_step.py --json out.json --sizes 10000,100000 --steps 10
    python benchmarks/streaming_step.py --device cuda --class-samples 300,100
"""
import argparse
import sys
import time

import torch

from benchmarks.class_stream import CLASS_MAP_SIZES, compare_class_stream
from benchmarks.op_count import count_step_ops
from benchmarks.measure import (StageTimer, device_sync, faiss_threads, load_average, machine_info, median,
                                pin_threads, rss_bytes)
from benchmarks.reference_step import bench_reference
from benchmarks.report import print_report
from benchmarks.step_shape import (C, CODE_BYTES, H, M, MAX_MEMORY_RATIO, MAX_NON_F_FRACTION,
                                   MAX_SAMPLE_EVICT_RATIO, NUM_CLASSES, NUM_REPLAY, STAGES, W, fill_buffer,
                                   make_quantizer)
from remind.model import REMINDModel, StreamingConfig
from remind.networks import build_resnet18_split
from remind.runtime import write_json
from remind.threads import intra_op_threads


# ----------------------------------------------------------------------------------- setup
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2, help="torch and faiss threads (default 2)")
    p.add_argument("--channels_last", action="store_true",
                   help="our F in channels-last memory order (the streaming scripts' --channels_last)")
    p.add_argument("--sizes", default="10000,100000,1000000",
                   help="buffer sizes (= capacities), comma separated")
    p.add_argument("--steps", type=int, default=20, help="measured streaming steps per size")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured streaming steps per size")
    p.add_argument("--evict-iters", type=int, default=3000,
                   help="sample+evict iterations per size (interleaved in blocks)")
    p.add_argument("--ref-reps", type=int, default=30, help="repetitions of the reference comparisons")
    p.add_argument("--class-samples", default="100,20",
                   help="samples of the streamed class in the class comparison: one number, or one per "
                        "map size (2x2,7x7)")
    p.add_argument("--class-buffer", type=int, default=None,
                   help="buffer size of the class comparison (default: the smallest of --sizes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: sizes 2000,5000, 1 step after 1 warm-up, short comparisons, "
                        "3 class samples")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.steps, args.warmup = "2000,5000", 1, 1
        args.evict_iters, args.ref_reps, args.class_samples = 200, 3, "3"
    args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not args.sizes or min(args.sizes) < 2 * NUM_REPLAY:
        p.error(f"every size must be at least {2 * NUM_REPLAY} (the replay draw)")
    counts = [int(s) for s in args.class_samples.split(",") if s.strip()]
    if len(counts) == 1:
        counts *= len(CLASS_MAP_SIZES)
    if len(counts) != len(CLASS_MAP_SIZES) or min(counts) < 1:
        p.error(f"--class-samples: one positive number or {len(CLASS_MAP_SIZES)} (one per map size)")
    args.class_samples = dict(zip(CLASS_MAP_SIZES, counts))
    if args.class_buffer is None:
        args.class_buffer = args.sizes[0]
    if args.class_buffer < 2 * NUM_REPLAY:
        p.error(f"--class-buffer must be at least {2 * NUM_REPLAY} (the replay draw)")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


# ------------------------------------------------------------------------ streaming steps
def bench_streaming(model, timer, buf_size, args, device):
    """Warm-up then measured steps; returns per-stage medians and the non-F share of the step."""
    gen = torch.Generator().manual_seed(args.seed + 7)
    n = args.warmup + args.steps
    maps = torch.rand(n, C, H, W, generator=gen).to(device)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen).tolist()
    totals = []
    timer.clear()
    for i in range(n):
        if i == args.warmup:
            timer.clear()
            totals.clear()
        timer._sync()
        t0 = time.perf_counter()
        with timer("encode"):
            codes = model.quantizer.encode_maps(maps[i:i + 1])[0]
        model.fit_sample(codes, labels[i], buf_size + i)
        timer._sync()
        totals.append(time.perf_counter() - t0)
    times = {s: list(timer.times[s]) for s in STAGES}
    assert all(len(v) == args.steps for v in times.values()), {k: len(v) for k, v in times.items()}
    non_f = [t - f for t, f in zip(totals, times["update_f"])]
    other = [t - sum(times[s][i] for s in STAGES) for i, t in enumerate(totals)]
    med = {s: median(v) for s, v in times.items()}
    med["other"] = median(other)
    med["total"] = median(totals)
    med["non_f"] = median(non_f)
    return {"median_s": med, "non_f_fraction": med["non_f"] / med["total"],
            "steps": args.steps, "warmup": args.warmup}


# --------------------------------------------------------------------------- sample+evict
def bench_sample_evict(buffers, iters, seed, device, block=100):
    """buffer.sample(100) + buffer.add on full buffers; sizes interleaved in blocks of ``block``."""
    sync = device_sync(device)
    gen = torch.Generator().manual_seed(seed + 11)
    code = torch.randint(0, 256, (H, W, M), dtype=torch.uint8, generator=gen).to(device)
    labels = torch.randint(0, NUM_CLASSES, (iters,), generator=gen).tolist()
    rec = {size: {"sample": [], "add": [], "both": []} for size in buffers}
    next_id = {size: 10 * size for size in buffers}
    done = 0
    # One unmeasured block per size first (warm-up), then the measured blocks.
    for warm in (True, False):
        todo = block if warm else iters
        done = 0
        while done < todo:
            n = min(block, todo - done)
            for size, buf in buffers.items():
                for j in range(n):
                    lab = labels[(done + j) % iters]
                    sync()
                    t0 = time.perf_counter()
                    buf.sample(2 * NUM_REPLAY)
                    sync()
                    t1 = time.perf_counter()
                    buf.add(code, lab, next_id[size])
                    sync()
                    t2 = time.perf_counter()
                    next_id[size] += 1
                    if not warm:
                        rec[size]["sample"].append(t1 - t0)
                        rec[size]["add"].append(t2 - t1)
                        rec[size]["both"].append(t2 - t0)
            done += n
    return {size: {k: median(v) for k, v in r.items()} for size, r in rec.items()}


# ----------------------------------------------------------------------------------- main
def fill_buffers(args, device):
    """One full buffer per size, and each size's memory and fill-time record."""
    buffers, per_size = {}, []
    for size in args.sizes:
        rss0, t0 = rss_bytes(), time.perf_counter()
        buf = fill_buffer(size, device, args.seed + size)
        fill_s, rss1 = time.perf_counter() - t0, rss_bytes()
        assert len(buf) == size and buf.is_full
        buffers[size] = buf
        per_size.append({"size": size, "fill_s": fill_s, "fill_rss_bytes": rss1 - rss0,
                         "buffer_nbytes": buf.nbytes, "raw_code_bytes": size * CODE_BYTES,
                         "memory_ratio": buf.nbytes / (size * CODE_BYTES)})
        print(f"filled {size:,} items in {fill_s:.1f} s", file=sys.stderr, flush=True)
    return buffers, per_size


def build_f_and_quantizer(args, device):
    """F (ResNet-18 from layer4.1 on, seeded init) and a random quantizer at the paper's shape."""
    torch.manual_seed(args.seed)
    _, f = build_resnet18_split(checkpoint=None, first_plastic_block="layer4.1", num_classes=NUM_CLASSES)
    return f, make_quantizer(device, args.seed)


def stream_every_size(args, device, f, pq, buffers, per_size):
    """The streaming steps on each buffer (one F and quantizer shared); returns the last model."""
    config = StreamingConfig(num_replay=NUM_REPLAY, mixup=True, channels_last=args.channels_last)
    timer = StageTimer(device)
    for entry in per_size:
        size = entry["size"]
        model = REMINDModel(None, f, pq, buffers[size], NUM_CLASSES, config, device=device, seed=args.seed)
        model.timer = timer
        t0 = time.perf_counter()
        entry["streaming"] = bench_streaming(model, timer, size, args, device)
        print(f"streamed {args.warmup + args.steps} steps at {size:,} in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
    return model


def judge_targets(res, per_size):
    res["targets"] = {
        "non_f_fraction": {str(e["size"]): e["streaming"]["non_f_fraction"] <= MAX_NON_F_FRACTION
                           for e in per_size},
        "sample_evict_ratio": res["sample_evict_ratio"] <= MAX_SAMPLE_EVICT_RATIO,
        "memory_ratio": {str(e["size"]): e["memory_ratio"] <= MAX_MEMORY_RATIO for e in per_size},
    }
    res["all_pass"] = (all(res["targets"]["non_f_fraction"].values()) and res["targets"]["sample_evict_ratio"]
                       and all(res["targets"]["memory_ratio"].values()))


def main(argv=None):
    args = parse_args(argv)
    pin_threads(args.threads)
    device = torch.device(args.device)
    t_start = time.perf_counter()
    res = {"machine": machine_info(args.threads, args.device), "load_before": load_average(),
           "memory_format": "channels-last" if args.channels_last else "NCHW",
           "steps": args.steps, "warmup": args.warmup, "ref_reps": args.ref_reps, "sizes": args.sizes}

    f, pq = build_f_and_quantizer(args, device)
    buffers, per_size = fill_buffers(args, device)
    model = stream_every_size(args, device, f, pq, buffers, per_size)
    res["ops_per_step"] = count_step_ops(model, torch.rand(1, C, H, W).to(device), 0, 10 ** 9)

    se = bench_sample_evict(buffers, args.evict_iters, args.seed, device)
    for entry in per_size:
        entry["sample_evict_us"] = {k: v * 1e6 for k, v in se[entry["size"]].items()}
        # Still within capacity after all those adds: every add evicted.
        assert len(buffers[entry["size"]]) == entry["size"]
    res["sample_evict_ratio"] = per_size[-1]["sample_evict_us"]["both"] / per_size[0]["sample_evict_us"]["both"]

    for size in args.sizes[:-1]:
        del buffers[size]  # only the largest is compared with the reference's approach
    # Both sides of each comparison run with the thread count fit_sample gives its small stages,
    # so the table compares the approaches, not the scheduling of threads on a shared CPU.
    threads = model.small_stage_threads
    with intra_op_threads(threads, device), faiss_threads(threads or args.threads):
        ref_rows, build_s = bench_reference(args.seed, device, model, buffers[args.sizes[-1]], args.ref_reps)
    res["reference_threads"] = threads or args.threads
    res["reference"], res["ref_dict_build_s"] = ref_rows, build_s
    del model, buffers  # free the largest buffer before the class comparison builds its own

    res["class_stream"] = compare_class_stream(args.class_samples, args.class_buffer, args.seed, device,
                                               channels_last=args.channels_last)

    res["per_size"] = per_size
    judge_targets(res, per_size)
    res["load_after"] = load_average()
    res["wall_s"] = time.perf_counter() - t_start
    print_report(res)
    if args.json:
        write_json(args.json, res)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
