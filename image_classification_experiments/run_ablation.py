"""REMIND's ablations on the Fashion-MNIST demo's setup, each over several seeds, as mean +- std.

  python run_ablation.py                                   # every factor, seeds 0 1 2 (hours on a CPU)
  python run_ablation.py --factors replay mixup --seeds 0 1 --stream_per_class 100   # a reduced study

The setup is run_fashion_mnist_demo.sh's: base initialisation on classes 0-4 (ResNet-18 from
scratch), classes 5-9 streamed one at a time (``--stream_per_class`` images each, the per-class lr
spread over them), 64 px images, and REMIND with 32 codebooks of 256, 50 replayed samples, mixup
(alpha 0.1), latent crops and a buffer of ``--buffer_cap`` items. Each factor changes one of these
from that reference configuration, the others held (one factor at a time):

  codebooks   number of PQ codebooks (``--codebooks``, default 8 16 32 64; the PQ refitted per count)
  replay      replayed samples per step (``--replay``, default 10 25 50)
  mixup       on / off
  crops       latent random resized crops on / off
  buffer      buffer cap in items (``--buffer_caps``, default 750 1500 3000 none; none: unlimited)

Per seed one base-init network and one feature cache are made (or reused: those of
run_fashion_mnist_demo.sh in ``--base_root/seed_<s>/base_init`` when present) and shared by every
configuration; a configuration shared by several factors (the reference one) runs once. Runs are
kept in ``--out_dir/seed_<s>/<config>`` and a finished run is not run again (an unfinished one
continues with --resume). The report (``--out_dir/ablation.md``, ``ablation.json``) gives, per
configuration, the final seen-class top-1 and its mean over the evaluation points, as mean +- std
over the seeds (sample std; 0 for one seed), the streaming wall time, and the machine.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import time

import torch

from image_classification_experiments import extract_features, imagenet_experiment, train_base_init_network_from_scratch
from image_classification_experiments.fit_pq import fit_and_encode
from image_classification_experiments.imagenet_folders import DataError
from remind.checkpoint import atomic_write
from remind.runtime import default_device, run_cli, write_json

FACTORS = ("codebooks", "replay", "mixup", "crops", "buffer")
REFERENCE = {"codebooks": 32, "replay": 50, "mixup": True, "crops": True, "buffer": None}  # buffer: --buffer_cap


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default="data/fashion_mnist_64", help="the demo's ImageFolder tree")
    p.add_argument("--labels_dir", default=None, help="default: <data_dir>/labels")
    p.add_argument("--base_root", default="demo_output/fashion_mnist",
                   help="reuse <base_root>/seed_<s>/base_init (the demo's) when it holds a network")
    p.add_argument("--out_dir", default="ablation_output/fashion_mnist")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--factors", nargs="+", choices=FACTORS, default=list(FACTORS))
    p.add_argument("--codebooks", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--replay", type=int, nargs="+", default=[10, 25, 50])
    p.add_argument("--buffer_caps", nargs="+", default=["750", "1500", "3000", "none"])
    p.add_argument("--buffer_cap", type=int, default=3000, help="the reference configuration's cap")
    p.add_argument("--reference_codebooks", type=int, default=32)
    p.add_argument("--reference_replay", type=int, default=50)
    p.add_argument("--codebook_size", type=int, default=256)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--base_classes", type=int, default=5)
    p.add_argument("--stream_per_class", type=int, default=300)
    p.add_argument("--base_per_class", type=int, default=1000)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--base_epochs", type=int, default=12)
    p.add_argument("--base_batch", type=int, default=64)
    p.add_argument("--base_lr", type=float, default=0.05)
    p.add_argument("--base_lr_step", type=int, default=9)
    p.add_argument("--lr_step", type=int, default=100)
    p.add_argument("--mixup_alpha", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--keep_models", action="store_true", help="keep each run's remind_model/ files")
    args = p.parse_args(argv)
    args.labels_dir = args.labels_dir or os.path.join(args.data_dir, "labels")
    args.device = args.device or default_device()
    args.buffer_caps = [None if c.lower() in ("none", "0") else int(c) for c in args.buffer_caps]
    if not os.path.isdir(os.path.join(args.data_dir, "train")):
        raise DataError(f"--data_dir {args.data_dir}: no train/ folder (make it with run_fashion_mnist_demo.sh or "
                        "make_fashion_mnist_imagefolder.py)")
    return args


# ------------------------------------------------------------------------ configurations
def reference(args):
    return {**REFERENCE, "codebooks": args.reference_codebooks, "replay": args.reference_replay,
            "buffer": args.buffer_cap}


def config_name(cfg):
    cap = "none" if cfg["buffer"] is None else cfg["buffer"]
    return (f"M{cfg['codebooks']}_replay{cfg['replay']}_mixup{int(cfg['mixup'])}_crops{int(cfg['crops'])}"
            f"_buffer{cap}")


def factor_values(args, factor):
    return {"codebooks": args.codebooks, "replay": args.replay, "mixup": [True, False], "crops": [True, False],
            "buffer": args.buffer_caps}[factor]


def configurations(args):
    """[(factor, value, config)] one factor at a time, the reference's values for the others."""
    rows = []
    for factor in args.factors:
        for value in factor_values(args, factor):
            rows.append((factor, value, {**reference(args), factor: value}))
    return rows


# ------------------------------------------------------------------------ base initialisation
def seed_base(args, seed, log):
    """(checkpoint, features file) of the seed's base network: the demo's when present, else made
    here with the demo's recipe (train_base_init_network_from_scratch.py, extract_features.py)."""
    name = f"ResNet18_base_{args.base_classes}.pth"
    for folder in (os.path.join(args.base_root, f"seed_{seed}", "base_init"),
                   os.path.join(args.out_dir, f"seed_{seed}", "base_init")):
        ckpt, features = os.path.join(folder, f"best_{name}"), os.path.join(folder, "base_init_features.h5")
        if os.path.isfile(ckpt) and os.path.isfile(features):
            log(f"seed {seed}: base network and features from {folder}")
            return ckpt, features
    log(f"seed {seed}: training the base network in {folder}")
    common = ["--image_size", args.image_size, "--max_per_class", args.base_per_class, "--num_classes",
              args.num_classes, "--eval_resize_ratio", "256/224", "--device", args.device]
    if not os.path.isfile(ckpt):
        train_base_init_network_from_scratch.main(_argv(
            "--data", args.data_dir, "--labels_dir", args.labels_dir, "--base_max_class", args.base_classes,
            "--epochs", args.base_epochs, "-b", args.base_batch, "--lr", args.base_lr, "--lr_step_size",
            args.base_lr_step, "-j", args.workers, "--seed", seed, "--save_dir", folder, "--ckpt_file", name, *common))
    extract_features.main(_argv(
        "--images_dir", args.data_dir, "--label_dir", args.labels_dir, "--classifier_ckpt", ckpt,
        "--base_init_classes", args.base_classes, "-j", args.workers, "--save_dir", folder, *common))
    return ckpt, features


def pq_cache(args, seed, features, codebooks, log):
    """A base-init cache folder (pq.npz, base_init_codes.h5) with ``codebooks`` codebooks."""
    folder = os.path.join(args.out_dir, f"seed_{seed}", f"pq_M{codebooks}")
    fit_and_encode(features, os.path.join(folder, "pq.npz"), os.path.join(folder, "base_init_codes.h5"),
                   num_codebooks=codebooks, codebook_size=args.codebook_size, seed=seed, device=args.device,
                   log=log)
    return folder


def _argv(*items):
    return [str(a) for a in items]


# ------------------------------------------------------------------------------ runs
def stream_argv(args, seed, cfg, ckpt, cache, save_dir):
    argv = ["--images_dir", args.data_dir, "--label_dir", args.labels_dir, "--classifier_ckpt", ckpt,
            "--base_init_dir", cache, "--num_classes", args.num_classes, "--base_init_classes", args.base_classes,
            "--streaming_min_class", args.base_classes, "--streaming_max_class", args.num_classes,
            "--class_increment", 1, "--max_per_class", args.stream_per_class, "--samples_per_class",
            args.stream_per_class, "--lr_step_size", args.lr_step, "--image_size", args.image_size,
            "--num_codebooks", cfg["codebooks"], "--codebook_size", args.codebook_size, "--num_workers",
            args.workers, "--seed", seed, "--device", args.device, "--progress", "off", "--resume",
            "--expt_name", f"ablation_{config_name(cfg)}_seed{seed}", "--save_dir", save_dir,
            "--rehearsal_samples", cfg["replay"], "--mixup_alpha", args.mixup_alpha]
    if cfg["buffer"] is not None:
        argv += ["--max_buffer_size", cfg["buffer"]]
    argv += ["--use_mixup"] if cfg["mixup"] else []
    argv += ["--random_resized_crops"] if cfg["crops"] else []
    return _argv(*argv)


def finished(save_dir, num_classes):
    try:
        with open(os.path.join(save_dir, "results.json")) as f:
            return json.load(f)["final"]["max_class"] == num_classes
    except (OSError, ValueError, KeyError, TypeError):
        return False


def run_config(args, seed, cfg, ckpt, cache, log):
    """The run's (results.json evaluations, streaming wall time in s); a finished run is read."""
    save_dir = os.path.join(args.out_dir, f"seed_{seed}", config_name(cfg))
    timing = os.path.join(save_dir, "ablation_time.json")
    if not finished(save_dir, args.num_classes):
        log(f"seed {seed}: {config_name(cfg)}")
        t0 = time.time()
        imagenet_experiment.main(stream_argv(args, seed, cfg, ckpt, cache, save_dir))
        write_json(timing, {"wall_s": time.time() - t0})
        if not args.keep_models:
            shutil.rmtree(os.path.join(save_dir, "remind_model"), ignore_errors=True)
    with open(os.path.join(save_dir, "results.json")) as f:
        evaluations = json.load(f)["evaluations"]
    with open(timing) as f:
        return evaluations, json.load(f)["wall_s"]


def run_all(args, log):
    """{config name: {"config", "factors", "runs": [per seed: final, mean, wall_s]}}."""
    rows = configurations(args)
    table = {}
    for factor, value, cfg in rows:
        entry = table.setdefault(config_name(cfg), {"config": cfg, "factors": [], "runs": []})
        entry["factors"].append([factor, value])
    for seed in args.seeds:
        ckpt, features = seed_base(args, seed, log)
        caches = {}
        for entry in table.values():
            cfg = entry["config"]
            if cfg["codebooks"] not in caches:
                caches[cfg["codebooks"]] = pq_cache(args, seed, features, cfg["codebooks"], log)
            evaluations, wall = run_config(args, seed, cfg, ckpt, caches[cfg["codebooks"]], log)
            curve = [r["seen_classes_top1"] for r in evaluations]
            entry["runs"].append({"seed": seed, "final": curve[-1], "mean": statistics.fmean(curve), "wall_s": wall})
    return table


# ------------------------------------------------------------------------------ report
def mean_std(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def machine():
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPU threads, GPU {gpu}, torch {torch.__version__}"


def fmt_value(factor, value):
    if factor in ("mixup", "crops"):
        return "on" if value else "off"
    return "unlimited" if value is None else str(value)


def report(args, table, wall):
    """The Markdown table: a row per (factor, value), in the order of --factors and their values."""
    runs = sum(r["wall_s"] for entry in table.values() for r in entry["runs"])
    lines = [f"Ablation on the Fashion-MNIST demo's setup: seeds {' '.join(map(str, args.seeds))}, "
             f"{args.stream_per_class} streamed images per class; seen-class top-1 (%), mean +- std over seeds.",
             f"Machine: {machine()}, device {args.device}. Wall time: {runs:.0f} s of streaming runs "
             f"({len(table)} configurations x {len(args.seeds)} seeds); this invocation {wall:.0f} s.", "",
             "| factor | value | final top-1 | mean top-1 over points | wall time per run (s) |",
             "|---|---|---:|---:|---:|"]
    for factor, value, cfg in configurations(args):
        entry = table[config_name(cfg)]
        finals = mean_std([r["final"] for r in entry["runs"]])
        means = mean_std([r["mean"] for r in entry["runs"]])
        secs = statistics.fmean([r["wall_s"] for r in entry["runs"]])
        lines.append(f"| {factor} | {fmt_value(factor, value)} | {finals[0]:.2f} +- {finals[1]:.2f} | "
                     f"{means[0]:.2f} +- {means[1]:.2f} | {secs:.0f} |")
    ref = config_name(reference(args))
    lines += ["", f"Reference configuration: {ref} (each factor's other settings)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.time()
    table = run_all(args, print)
    wall = time.time() - t0
    text = report(args, table, wall)
    print(text, end="")
    with atomic_write(os.path.join(args.out_dir, "ablation.md")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    write_json(os.path.join(args.out_dir, "ablation.json"),
               {"machine": machine(), "device": args.device, "wall_s": wall, "seeds": args.seeds,
                "stream_per_class": args.stream_per_class, "configurations": table})
    return 0


if __name__ == "__main__":
    run_cli(main, prog="run_ablation.py")
