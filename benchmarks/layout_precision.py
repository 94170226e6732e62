#!/usr/bin/env python
"""Which memory order and precision pay, per network part: base-init training, G's features and F's
streaming step, each in {NCHW, channels-last} x {float32, bfloat16 autocast}.

    python benchmarks/layout_precision.py                 # the default run (about 2 min on 2 cores)
    python benchmarks/layout_precision.py --quick         # smoke run
    python benchmarks/layout_precision.py --device cuda   # float16 autocast instead of bfloat16

Each cell is the median wall time of a fixed-shape call after warm-up, with the ratio to NCHW
float32. Shapes: base init = ResNet-18 (10 classes) forward + backward + SGD on a batch of 64 images
of 64 px (the demo's); G = ResNet-18 up to layer4.0 on 128 images of 64 px (no grad); F = the
streaming step's update (layer4.1 + pool + fc, 1000 classes, SGD) on 51 maps of 512 x 7 x 7 (the
paper's) and 512 x 2 x 2 (the demo's). Only speed is measured here: whether a faster setting keeps
the accuracy is a question for whole runs (README, "Runtime").
"""
import argparse
import sys
import time

import torch
import torch.nn.functional as nnf

import remind  # noqa: F401  (torchvision compatibility shim first)
from benchmarks.measure import device_sync, load_average, machine_info, pin_threads, time_median
from remind.networks import build_resnet18, build_resnet18_split

SETTINGS = [("NCHW", False, False), ("NCHW", False, True), ("channels-last", True, False),
            ("channels-last", True, True)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=8, help="measured calls per cell")
    p.add_argument("--quick", action="store_true", help="smoke run: small batches, 2 reps")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.quick:
        args.reps = min(args.reps, 2)
    return args


def training_call(net, x, y, channels_last, low_precision, device):
    """One forward + backward + SGD step of ``net`` on (x, y) in the given order and precision."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=fmt).train()
    x = x.to(device).contiguous(memory_format=fmt)
    y = y.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16

    def call():
        with torch.autocast(device.type, dtype=dtype, enabled=low_precision):
            loss = nnf.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return call


def inference_call(net, x, channels_last, low_precision, device):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=fmt).eval()
    x = x.to(device).contiguous(memory_format=fmt)
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16

    @torch.no_grad()
    def call():
        with torch.autocast(device.type, dtype=dtype, enabled=low_precision):
            net(x)
    return call


def workloads(quick):
    """(name, builder(channels_last, low_precision, device) -> call) for each measured part."""
    gen = torch.Generator().manual_seed(0)
    batch, images, maps = (8, 16, 9) if quick else (64, 128, 51)

    def base_init(cl, lp, dev):
        torch.manual_seed(0)
        return training_call(build_resnet18(10), torch.rand(batch, 3, 64, 64, generator=gen),
                             torch.randint(0, 10, (batch,), generator=gen), cl, lp, dev)

    def g_features(cl, lp, dev):
        torch.manual_seed(0)
        g, _ = build_resnet18_split(first_plastic_block="layer4.1", num_classes=10)
        return inference_call(g, torch.rand(images, 3, 64, 64, generator=gen), cl, lp, dev)

    def f_step(side):
        def build(cl, lp, dev):
            torch.manual_seed(0)
            _, f = build_resnet18_split(first_plastic_block="layer4.1", num_classes=1000)
            return training_call(f, torch.rand(maps, 512, side, side, generator=gen),
                                 torch.randint(0, 1000, (maps,), generator=gen), cl, lp, dev)
        return build

    return [(f"base init: train step, {batch} x 64 px", base_init),
            (f"G: features of {images} x 64 px", g_features),
            (f"F: streaming update, {maps} x 512 x 7 x 7", f_step(7)),
            (f"F: streaming update, {maps} x 512 x 2 x 2", f_step(2))]


def main(argv=None):
    args = parse_args(argv)
    pin_threads(args.threads)
    device = torch.device(args.device)
    sync = device_sync(device)
    low = "bf16" if device.type == "cpu" else "fp16"
    info = machine_info(args.threads, args.device)
    load_before = load_average()
    rows = []
    for name, build in workloads(args.quick):
        cells = [time_median(build(cl, lp, device), args.reps, sync) for _, cl, lp in SETTINGS]
        rows.append((name, cells))
        print(f"measured {name}", file=sys.stderr, flush=True)
    print(f"\nmemory order and precision -- {info['cpu']}, {info['threads']} threads, device {args.device}"
          + (f" ({info['gpu']})" if "gpu" in info else "") + f", torch {info['torch']}")
    print(f"load average before {load_before[0]:.2f}, after {load_average()[0]:.2f}; medians of {args.reps} calls\n")
    heads = [f"{layout} {low if lp else 'fp32'}" for layout, _, lp in SETTINGS]
    head = f"{'ms per call (x vs NCHW fp32)':<40}" + "".join(f"{h:>20}" for h in heads)
    print(head)
    print("-" * len(head))
    for name, cells in rows:
        print(f"{name:<40}" + "".join(f"{c * 1e3:12.1f} ({cells[0] / c:4.2f}x)" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
