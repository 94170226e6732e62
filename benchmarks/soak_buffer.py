#!/usr/bin/env python
"""Soak benchmark: a replay buffer at the ImageNet cap, streamed with periodic checkpoints.

Fills a ReplayBuffer to the reference ImageNet cap (959,665 items of 7 x 7 x 32 uint8 codes, 1,568 B
each: 1.5 GB; random codes, labels uniform over 1000 classes), then streams N samples through what
the streaming step does to the buffer: ``sample(50)`` + gather of the codes and labels, then
``add`` of the new item (evicting, since the buffer is full). Every M samples the buffer is
checkpointed as a run checkpoint (``save_run_checkpoint``, keep 2, CRC-verified on load).

Reported: resident memory (RSS) at the start and end of streaming and its peak (the buffer must not
grow or leak: flat), the per-sample time over the first and last window of samples (flat: the
bookkeeping is O(1)), and the time to save and to load (CRC check + torch.load + load_state_dict)
the full buffer, with a check that the restored buffer draws exactly what the saved one would.

    python benchmarks/soak_buffer.py                         # 959,665 items, 100k samples, ckpt every 25k
    python benchmarks/soak_buffer.py --quick                 # smoke run: 20k items, 4k samples (seconds)
    python benchmarks/soak_buffer.py --samples 20000 --checkpoint_every 10000 --json soak.json

Measured (default run: 100k samples, 4 checkpoints; 2-core CPU shared with other jobs, load ~7,
the process got 29% of a core): per sample 221 us median at the start, 230 us at the end (1.04x);
RSS 1.93 GB at the start of streaming, 1.94 GB at the end (+0.6%); peak 3.55 GB (the save's copy
of the codes); checkpoint file 1.52 GB, save 16 s, load 10.8 s (of which the CRC check 3.1 s).

Needs about 2 x the code bytes of RAM plus 0.4 GB (the buffer, plus the checkpoint's copy of it
while saving or the loaded copy while loading: 3.6 GB measured) and 3 x on disk (the two kept
checkpoints and the one being written; a temporary folder, removed, unless --dir).
"""
import argparse
import gc
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from remind.checkpoint import verify_checkpoint
from remind.replay_buffer import ReplayBuffer
from remind.runtime import load_run_checkpoint, save_run_checkpoint, write_json

IMAGENET_CAP = 959_665
KIND = "soak_buffer"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capacity", type=int, default=IMAGENET_CAP, help="buffer items (default: the ImageNet cap)")
    p.add_argument("--code_shape", default="7,7,32", help="code shape per item (uint8)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--samples", type=int, default=100_000, help="samples streamed through the full buffer")
    p.add_argument("--checkpoint_every", type=int, default=25_000, help="checkpoint every M samples (0: never)")
    p.add_argument("--replay", type=int, default=50, help="items drawn per sample")
    p.add_argument("--window", type=int, default=2000, help="samples timed at the start and at the end")
    p.add_argument("--keep", type=int, default=2, help="checkpoint versions kept")
    p.add_argument("--dir", default=None, help="checkpoint folder (default: a temporary one, removed)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20,000 items, 100 classes, 4,000 samples, checkpoint every 1,000")
    args = p.parse_args(argv)
    if args.quick:
        args.capacity, args.classes, args.samples, args.checkpoint_every, args.window = 20_000, 100, 4000, 1000, 500
    args.code_shape = tuple(int(s) for s in args.code_shape.split(","))
    args.window = max(1, min(args.window, args.samples // 2))
    if args.samples < 2:
        p.error("--samples must be at least 2")
    return args


# --------------------------------------------------------------------------------- memory
def rss_bytes():
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_rss_bytes():
    """Largest RSS of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# ---------------------------------------------------------------------------------- phases
def fill(args, gen, rng, chunk=1 << 16):
    """A full buffer of random codes, labels uniform over the classes."""
    buf = ReplayBuffer(args.code_shape, capacity=args.capacity, seed=args.seed)
    for start in range(0, args.capacity, chunk):
        n = min(chunk, args.capacity - start)
        codes = torch.randint(0, 256, (n, *args.code_shape), dtype=torch.uint8, generator=gen)
        buf.add_batch(codes, rng.integers(args.classes, size=n), np.arange(start, start + n))
    assert len(buf) == args.capacity and buf.is_full
    return buf


def save(buf, path, args):
    t0 = time.perf_counter()
    save_run_checkpoint(path, KIND, {"capacity": args.capacity}, {"buffer": buf.state_dict()}, keep=args.keep)
    return time.perf_counter() - t0


def stream(buf, args, gen, rng, path):
    """N samples of sample + gather + add; per-sample times (checkpoints excluded), RSS, saves."""
    pool = torch.randint(0, 256, (1024, *args.code_shape), dtype=torch.uint8, generator=gen)
    labels = rng.integers(args.classes, size=args.samples)
    times = np.empty(args.samples)
    rss, saves, rss_ckpt = [rss_bytes()], [], None
    item_id = args.capacity
    for i in range(args.samples):
        t0 = time.perf_counter()
        idx = buf.sample(args.replay)
        codes, _ = buf.codes[idx], buf.labels[idx]
        buf.add(pool[i % len(pool)], labels[i], item_id)
        times[i] = time.perf_counter() - t0
        item_id += 1
        assert codes.shape[0] == args.replay
        if (i + 1) % 1000 == 0:
            rss.append(rss_bytes())
        if args.checkpoint_every and (i + 1) % args.checkpoint_every == 0:
            saves.append(save(buf, path, args))
            rss.append(rss_bytes())
            rss_ckpt = rss[-1] if rss_ckpt is None else rss_ckpt
    rss.append(rss_bytes())
    return times, {"start": rss[0], "after_first_checkpoint": rss_ckpt, "end": rss[-1], "max": max(rss)}, saves


def save_and_load(buf, args, path):
    """Time a save and a load of the full buffer; check the restored one draws what it would."""
    save_s = save(buf, path, args)
    size = os.path.getsize(path)
    expected = buf.sample(args.replay).clone()
    probe = torch.from_numpy(np.random.default_rng(args.seed).integers(len(buf), size=10_000))
    probe_codes, ids, counts = buf.codes[probe].clone(), buf.item_ids[:len(buf)].clone(), buf.class_counts()
    buf.codes = None  # free the streamed buffer before loading its copy
    gc.collect()
    t0 = time.perf_counter()
    ckpt = load_run_checkpoint(path, KIND, {"capacity": args.capacity})  # CRC check + torch.load
    restored = ReplayBuffer(args.code_shape, capacity=args.capacity, seed=args.seed + 1)
    restored.load_state_dict(ckpt["buffer"])
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    verify_checkpoint(path)  # the CRC check's share of the load, timed on its own
    crc_s = time.perf_counter() - t0
    del ckpt
    same = (torch.equal(restored.sample(args.replay), expected) and torch.equal(restored.codes[probe], probe_codes)
            and torch.equal(restored.item_ids[:len(restored)], ids) and restored.class_counts() == counts)
    return {"save_s": save_s, "load_s": load_s, "crc_check_s": crc_s, "file_bytes": size, "restored_identical": bool(same)}


# --------------------------------------------------------------------------------- report
def summarize(args, fill_s, rss_filled, times, rss, saves, io):
    w = args.window
    first, last = times[:w], times[-w:]
    return {
        "capacity": args.capacity, "code_shape": list(args.code_shape), "classes": args.classes,
        "samples": args.samples, "checkpoint_every": args.checkpoint_every, "replay": args.replay,
        "window": w, "code_bytes": args.capacity * int(np.prod(args.code_shape)), "fill_s": fill_s,
        "rss_after_fill": rss_filled, "rss_stream_start": rss["start"], "rss_stream_end": rss["end"],
        "rss_after_first_checkpoint": rss["after_first_checkpoint"], "rss_stream_max": rss["max"],
        "peak_rss": peak_rss_bytes(),
        "sample_us_start": _stats_us(first), "sample_us_end": _stats_us(last),
        "stream_s": float(times.sum()), "checkpoint_s": saves, **io,
    }


def _stats_us(seconds):
    return {"median": statistics.median(seconds) * 1e6, "mean": float(seconds.mean()) * 1e6,
            "p99": float(np.percentile(seconds, 99)) * 1e6}


def gb(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _us(s):
    return f"{s['median']:.0f} us median, {s['mean']:.0f} us mean, {s['p99']:.0f} us p99"


def print_report(r):
    growth = r["rss_stream_end"] - r["rss_stream_start"]
    s0, s1 = r["sample_us_start"], r["sample_us_end"]
    saves = r["checkpoint_s"]
    rows = [
        ("fill", f"{r['fill_s']:.1f} s"),
        (f"per sample, first {r['window']:,}", _us(s0)),
        (f"per sample, last {r['window']:,}", _us(s1)),
        ("per sample, end / start", f"{s1['median'] / s0['median']:.2f} (median)"),
        ("streaming (checkpoints excluded)", f"{r['stream_s']:.1f} s"),
        ("RSS at start of streaming", gb(r["rss_stream_start"])),
        ("RSS after the first checkpoint", gb(r["rss_after_first_checkpoint"])
         if r["rss_after_first_checkpoint"] else "no checkpoint"),
        ("RSS at end of streaming", f"{gb(r['rss_stream_end'])} ({growth / max(r['rss_stream_start'], 1):+.1%})"),
        ("RSS max while streaming", gb(r["rss_stream_max"])),
        ("peak RSS (with save + load)", gb(r["peak_rss"])),
        ("periodic checkpoints", f"{len(saves)}, {max(saves):.1f} s max" if saves else "none"),
        ("checkpoint file", gb(r["file_bytes"])),
        ("save full buffer", f"{r['save_s']:.2f} s"),
        ("load full buffer", f"{r['load_s']:.2f} s (CRC check {r['crc_check_s']:.2f} s)"),
        ("restored buffer identical", "yes" if r["restored_identical"] else "NO"),
    ]
    shape = "x".join(map(str, r["code_shape"]))
    print(f"soak: {r['capacity']:,} items x {shape} uint8 ({gb(r['code_bytes'])} of codes), {r['classes']} classes, "
          f"{r['samples']:,} samples of sample({r['replay']}) + add, checkpoint every {r['checkpoint_every']:,}")
    print(f"machine: {r['machine']}; load average {r['load_before']} -> {r['load_after']}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    gen, rng = torch.Generator().manual_seed(args.seed), np.random.default_rng(args.seed)
    folder = args.dir or tempfile.mkdtemp(prefix="remind_soak_")
    path = os.path.join(folder, "buffer.pt")
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    try:
        t0 = time.perf_counter()
        buf = fill(args, gen, rng)
        fill_s, rss_filled = time.perf_counter() - t0, rss_bytes()
        print(f"filled {args.capacity:,} items in {fill_s:.1f} s", file=sys.stderr, flush=True)
        times, rss, saves = stream(buf, args, gen, rng, path)
        io = save_and_load(buf, args, path)
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    res = summarize(args, fill_s, rss_filled, times, rss, saves, io)
    res["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s)"
    res["load_before"], res["load_after"] = load_before, " ".join(f"{v:.1f}" for v in os.getloadavg())
    print_report(res)
    if args.json:
        write_json(args.json, res)
        print(f"results written to {args.json}")
    return 0 if res["restored_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
