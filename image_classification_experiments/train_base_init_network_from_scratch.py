"""Base initialization: train a ResNet-18 from scratch on the classes [0, base_max_class).

Paper defaults: 100 classes, 1000-way fc, 40 epochs, SGD lr 0.1 momentum 0.9 weight decay 1e-4,
batch 256, lr x0.1 every 15 epochs, RandomResizedCrop + flip; val Resize(256/224 of the size,
``--eval_resize_ratio``) + CenterCrop. Labels are the class-order labels of
imagenet_{train,val}_labels.npy, so fc row k is the class of label k.

One process (CPU or one GPU):   python train_base_init_network_from_scratch.py --data DIR ...
Several GPUs / nodes (DDP):      torchrun --nproc_per_node N train_base_init_network_from_scratch.py ...
(nccl on CUDA, gloo on CPU; ``--batch_size`` is the global batch, split over the processes;
only rank 0 writes files.) The reference's pytorch-examples flags keep their meaning: ``--gpu N``
trains on cuda:N; ``--world-size W --rank R --dist-url tcp://HOST:PORT`` joins W processes
started by hand; ``--multiprocessing-distributed`` (one process per GPU) is torchrun's job: with
one GPU or none it trains in this process, with more it says the torchrun line to run instead.

Outputs in ``--save_dir``:
- ``best_<ckpt_file>``: the best epoch by val top-1, {state_dict (torchvision names:
  ``resnet18(num_classes=...).load_state_dict(ckpt["state_dict"])``), class_order (the wnid of
  each label: fc row k is class_order[k]), label_space "class_order", arch, epoch, best_acc1};
- ``<ckpt_file>``: last epoch, for ``--resume`` (a run checkpoint of kind
  ``remind-base-init-last``, ``remind.runtime``; the one before it stays as ``<name>.1.pth``):
  {state_dict, class_order, label_space, optimizer, scheduler, scaler, epoch (epochs done),
  best_acc1, best_epoch, history, rng, args} with the fingerprint of the settings in
  ``RUN_DEFINING`` (a resume with other values of those, or with another class order, is
  refused; --epochs may grow);
- ``config.json`` (arguments) and ``results.json`` (per-epoch loss / accuracy / lr / speed).
Every file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
With ``--seed`` a CPU run is deterministic, and a resumed run equals an uninterrupted one: each
epoch draws its data order and augmentations from (seed, epoch, rank).
"""
import argparse
import dataclasses
import math
import os
import sys
import time
import warnings

import remind  # noqa: F401  (makes torchvision importable beside a CPU-only torch)
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from remind.checkpoint import CheckpointError, save_checkpoint
from remind.errors import InputError
from remind.networks import LABEL_SPACES, build_resnet18, load_base_network
from remind.runtime import (add_run_arguments, capture_rng, default_device, fingerprint, fingerprint_diff,
                            load_run_checkpoint, progress_disabled, resolve_device, restore_rng, run_cli,
                            save_run_checkpoint, seed_everything, set_cpu_threads, configure_tf32)

from image_classification_experiments import imagenet_data as data
from image_classification_experiments import imagenet_folders as folders
from remind.runtime import write_json
from image_classification_experiments.imagenet_folders import DataError

ARCHS = ("ResNet18ClassifyAfterLayer4_1", "resnet18")  # both: torchvision's ResNet-18 layout
KIND = "remind-base-init-last"  # the last checkpoint's format
# The settings that define what training computes: a resume with other values is refused.
# (--epochs may grow on a resume; paths, workers, device, --amp, --tf32 and the world size may change.)
RUN_DEFINING = ("num_classes", "base_max_class", "image_size", "max_per_class", "batch_size", "lr",
                "momentum", "weight_decay", "lr_step_size", "lr_gamma", "seed", "eval_resize_ratio")
# Run-defining settings added after the first version, with the value older checkpoints were made with.
LATER_DEFINING = {"eval_resize_ratio": data.DEFAULT_EVAL_RESIZE_RATIO}
# --dist-url's default: a by-hand launch on one machine (the reference's was a placeholder address);
# under torchrun this default gives way to torchrun's own rendezvous (env://).
DEFAULT_DIST_URL = "tcp://127.0.0.1:23456"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_reference_arguments(p)
    add_project_arguments(p)
    args = p.parse_args(argv)
    if args.gpu is not None:  # the reference's single-GPU choice
        if args.device not in (None, f"cuda:{args.gpu}"):
            raise DataError(f"--gpu {args.gpu} and --device {args.device} disagree; give one of them")
        args.device = f"cuda:{args.gpu}"
    if args.device is None:
        args.device = default_device()
    return args


def add_reference_arguments(p):
    """The reference's flags (pytorch/examples' ImageNet trainer plus its own), with their meaning."""
    p.add_argument("--data", "--images_dir", dest="data", metavar="DIR", required=True,
                   help="dataset root holding train/ and val/")
    p.add_argument("-a", "--arch", default="ResNet18ClassifyAfterLayer4_1", choices=ARCHS)
    p.add_argument("--ckpt_file", default="ResNet18ClassifyAfterLayer4_1.pth",
                   help="name of the last checkpoint; the best one is best_<ckpt_file>")
    p.add_argument("--save_dir", default="resnet_imagenet_ckpts")
    p.add_argument("--base_max_class", type=int, default=100, help="train on classes [0, this)")
    p.add_argument("--labels_dir", "--label_dir", dest="labels_dir", default="./imagenet_files",
                   help="folder of imagenet_{train,val}_labels.npy (or its imagenet_indices/)")
    p.add_argument("-j", "--workers", "--num_workers", dest="num_workers", type=int, default=8,
                   help="data loading processes per training process")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--start-epoch", "--start_epoch", dest="start_epoch", type=int, default=0,
                   help="start at this epoch (its lr and data order) when not resuming; --resume "
                        "continues from the checkpoint's epoch instead")
    p.add_argument("-b", "--batch_size", type=int, default=256,
                   help="global batch size (divided over the DDP processes)")
    p.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=1e-4)
    p.add_argument("-p", "--print-freq", "--print_freq", dest="print_freq", type=int, default=None,
                   help="also print the running loss every N batches (default: a progress bar and one "
                        "line per epoch)")
    p.add_argument("--resume", default="", metavar="PATH",
                   help="last checkpoint (or the save dir holding it) to continue from")
    p.add_argument("-e", "--evaluate", action="store_true",
                   help="only evaluate the checkpoint given by --resume on the base val classes")
    p.add_argument("--world-size", "--world_size", dest="world_size", type=int, default=-1,
                   help="processes started by hand (each with its --rank); torchrun sets it itself")
    p.add_argument("--rank", type=int, default=-1, help="this process's rank when started by hand")
    p.add_argument("--dist-url", "--dist_url", dest="dist_url", default=DEFAULT_DIST_URL,
                   help="process-group init method for processes started by hand (under torchrun: "
                        "torchrun's env:// unless another URL is given)")
    p.add_argument("--dist-backend", "--dist_backend", dest="dist_backend", default="nccl",
                   help="torch.distributed backend (nccl needs CUDA: gloo is used on the CPU)")
    p.add_argument("--gpu", type=int, default=None, help="train on this GPU (same as --device cuda:N)")
    p.add_argument("--multiprocessing-distributed", "--multiprocessing_distributed",
                   dest="multiprocessing_distributed", action="store_true",
                   help="one process per GPU: run under torchrun --nproc_per_node N (with one GPU or "
                        "none, this process trains alone)")
    add_run_arguments(p)  # --device, --seed, --num_threads, --progress, --tf32


def add_project_arguments(p):
    p.add_argument("--val_labels_csv", default=None,
                   help="LOC_val_solution.csv when val/ is the flat Kaggle layout")
    p.add_argument("--num_classes", type=int, default=1000, help="size of the output layer")
    p.add_argument("--lr_step_size", type=int, default=15, help="epochs between lr decays")
    p.add_argument("--lr_gamma", type=float, default=0.1, help="lr decay factor")
    p.add_argument("--image_size", type=int, default=224)
    data.add_eval_resize_argument(p)
    p.add_argument("--max_per_class", type=int, default=None,
                   help="use only the first N training images of each class (small demos)")
    p.add_argument("--ckpt_label_space", choices=LABEL_SPACES, default=None,
                   help="with --evaluate: the fc row order of a checkpoint that does not record it")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: float16 autocast + grad scaling on CUDA, bfloat16 autocast on the "
                        "CPU (about 2x faster on CPUs with AVX512-BF16 or AMX, slower without; "
                        "docs/performance.md)")
    p.add_argument("--channels_last", action="store_true", help="channels_last memory format")
    p.add_argument("--skip_corrupt_images", action="store_true",
                   help="skip (and count) unreadable image files instead of stopping")


def check_args(args):
    if not 0 < args.base_max_class <= args.num_classes:
        raise DataError(f"--base_max_class {args.base_max_class} must lie in 1..--num_classes "
                        f"({args.num_classes})")
    for name in ("epochs", "batch_size", "lr_step_size"):
        if getattr(args, name) < 1:
            raise DataError(f"--{name} must be at least 1")
    if args.max_per_class is not None and args.max_per_class < 1:
        raise DataError("--max_per_class must be at least 1")
    if args.print_freq is not None and args.print_freq < 1:
        raise DataError("--print-freq must be at least 1")
    if args.start_epoch < 0:
        raise DataError("--start-epoch must be at least 0")
    if args.evaluate and not args.resume:
        raise DataError("--evaluate needs the checkpoint to evaluate in --resume")
    data.check_image_size(args.image_size)


# ------------------------------------------------------------------------------- distributed
class Dist:
    """World layout: torchrun's environment, or the reference's --world-size/--rank/--dist-url for
    processes started by hand; a plain run is a world of one. ``notes``: flags that could not apply
    as given, one line each, for rank 0 to print."""

    def __init__(self, world=1, rank=0, local_rank=0, url="env://", notes=()):
        self.world, self.rank, self.local_rank, self.url = world, rank, local_rank, url
        self.enabled = self.world > 1
        self.main = self.rank == 0
        self.notes = list(notes)

    @classmethod
    def from_args(cls, args, device, environ=None, gpu_count=None):
        environ = os.environ if environ is None else environ
        gpus = (torch.cuda.device_count() if gpu_count is None else gpu_count) if device.type == "cuda" else 0
        if "WORLD_SIZE" in environ:  # torchrun (or another launcher that sets its variables)
            world = int(environ["WORLD_SIZE"])
            notes = [f"--{flag} {value} ignored: {why}" for flag, value, why in (
                ("world-size", args.world_size, f"torchrun started {world} processes"),
                ("rank", args.rank, "torchrun gives each process its rank"),
                ("gpu", args.gpu, "each process takes the GPU of its LOCAL_RANK"))
                if value not in (None, -1) and not (flag == "world-size" and value == world)]
            url = "env://" if args.dist_url == DEFAULT_DIST_URL else args.dist_url
            return cls(world, int(environ.get("RANK", "0")), int(environ.get("LOCAL_RANK", "0")), url, notes)
        notes = []
        if args.multiprocessing_distributed:
            if args.world_size > 1 or gpus > 1:
                raise InputError(multiprocessing_line(args, gpus))
            notes.append(f"--multiprocessing-distributed: {gpus} GPU(s) visible, so this one process trains "
                         "(as torchrun --nproc_per_node 1 would)")
        if args.world_size > 1:
            if not 0 <= args.rank < args.world_size:
                raise InputError(f"--world-size {args.world_size} needs --rank in 0..{args.world_size - 1} "
                                 "(start one process per rank), or run under torchrun")
            local = args.gpu if args.gpu is not None else args.rank % max(gpus, 1)
            return cls(args.world_size, args.rank, local, args.dist_url, notes)
        return cls(notes=notes)

    def init(self, device, backend):
        if self.enabled:
            if device.type != "cuda" and backend == "nccl":
                self.notes.append("--dist-backend nccl needs CUDA; using gloo on the CPU")
                backend = "gloo"
            dist.init_process_group(backend=backend, init_method=self.url,
                                    world_size=self.world, rank=self.rank)

    def sum(self, values, device):
        """Sum a list of numbers over all processes (identity in a world of one)."""
        t = torch.tensor(values, dtype=torch.float64, device=device)
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()

    def sync_buffers(self, model):
        """Rank 0's BatchNorm statistics everywhere: DDP syncs them only at the start of each
        forward, so after an epoch every rank holds its own last update. Evaluating rank 0's
        buffers means evaluating exactly the network that rank 0 saves."""
        if self.enabled:
            for buf in model.buffers():
                dist.broadcast(buf, src=0)

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def multiprocessing_line(args, gpus):
    """What to run instead of --multiprocessing-distributed (this script never spawns processes)."""
    nodes = max(args.world_size, 1)
    multi = (f" --nnodes {nodes} --node_rank {max(args.rank, 0)} --master_addr HOST --master_port PORT"
             if nodes > 1 else "")
    return (f"--multiprocessing-distributed: one process per GPU is torchrun's job here; run "
            f"torchrun --nproc_per_node {max(gpus, 1)}{multi} train_base_init_network_from_scratch.py "
            "<the same flags without --multiprocessing-distributed, --world-size, --rank, --dist-url>"
            f" (or train_base_init_network.sh with NPROC={max(gpus, 1)})")


class ShardSampler(Sampler):
    """Every world-th index from rank: each val image is seen exactly once (no padding)."""

    def __init__(self, n, rank, world):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def epoch_seed(seed, epoch, rank):
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


# ------------------------------------------------------------------------------- train / eval
def bars_disabled(args, world):
    """tqdm's ``disable``: only rank 0 draws progress bars, as --progress says."""
    return True if not world.main else progress_disabled(args)


def topk_correct(logits, target, ks):
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target.unsqueeze(1))
    return [hit[:, :min(k, maxk)].any(dim=1).sum().item() for k in ks]


def amp_dtype(device):
    """--amp's autocast type: float16 on CUDA (tensor cores), bfloat16 on the CPU (its fast type)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def train_one_epoch(model, loader, criterion, optimizer, scaler, args, device, world, epoch, tally):
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    bar = tqdm(total=len(loader.sampler) * world.world, unit="img", unit_scale=True,
               desc=f"epoch {epoch + 1}/{args.epochs}", disable=bars_disabled(args, world),
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True, leave=False)
    for step, (x, y, _) in enumerate(data.iterate_batches(loader, tally)):
        if x is None:
            if world.enabled:  # the other processes would wait forever for this one's gradients
                raise DataError("a whole batch of images was unreadable; cannot keep the DDP "
                                "processes in step (remove the broken files)")
            continue
        x = x.to(device, non_blocking=True, memory_format=fmt)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype(device), enabled=args.amp):
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n = y.shape[0]
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(1) == y).sum().double()
        seen += n
        bar.update(n * world.world)
        if not bar.disable and step % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", refresh=False)
        if args.print_freq and step % args.print_freq == 0 and world.main:  # the reference's -p
            tqdm.write(f"epoch {epoch + 1} [{step}/{len(loader)}]  loss {loss.item():.4f}  "
                       f"running loss {loss_sum.item() / seen:.4f}  running train top-1 "
                       f"{100.0 * correct.item() / seen:.2f}%")
    bar.close()
    total_loss, total_correct, total_seen = world.sum([loss_sum.item(), correct.item(), seen], device)
    if not math.isfinite(total_loss):
        raise DataError(f"training diverged in epoch {epoch + 1} (loss is not finite); "
                        "lower --lr or drop --amp")
    return total_loss / max(total_seen, 1), 100.0 * total_correct / max(total_seen, 1), int(total_seen)


@torch.no_grad()
def evaluate(model, loader, args, device, world, tally):
    model.eval()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    c1 = c5 = n = 0
    bar = tqdm(total=len(loader.sampler) * world.world, unit="img", unit_scale=True, desc="val",
               disable=bars_disabled(args, world), mininterval=1.0 if sys.stderr.isatty() else 30.0,
               dynamic_ncols=True, leave=False)
    for x, y, _ in data.iterate_batches(loader, tally):
        if x is None:
            continue
        x = x.to(device, non_blocking=True, memory_format=fmt)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype(device), enabled=args.amp):
            logits = model(x)
        a, b = topk_correct(logits.float(), y, (1, 5))
        c1, c5, n = c1 + a, c5 + b, n + y.shape[0]
        bar.update(y.shape[0] * world.world)
    bar.close()
    c1, c5, n = world.sum([c1, c5, n], device)
    if n == 0:
        raise DataError("no readable validation images")
    return 100.0 * c1 / n, 100.0 * c5 / n


# ------------------------------------------------------------------------------- main
def find_resume_file(args):
    path = args.resume
    if os.path.isdir(path):
        path = os.path.join(path, args.ckpt_file)
    if not os.path.isfile(path):
        raise DataError(f"--resume: checkpoint not found: {path}")
    return path


@dataclasses.dataclass
class DataParts:
    """The loaders and what the label files say: ``class_order[k]`` is the wnid of label k
    (what the checkpoints record as their fc rows); ``class_folders`` is ImageFolder's sorted list."""

    train_loader: object
    val_loader: object
    generator: torch.Generator
    info: dict
    class_order: list
    class_folders: list


def build_data(args, world, device):
    train_samples, train_labels, train_label_file = data.load_split(
        args.data, "train", args.labels_dir)
    val_samples, val_labels, val_label_file = data.load_split(
        args.data, "val", args.labels_dir, args.val_labels_csv)
    class_order = folders.class_order_from_labels(train_samples, train_labels, train_label_file)
    folders.check_same_class_order(
        class_order, folders.class_order_from_labels(val_samples, val_labels, val_label_file), val_label_file)
    train_ds = data.ClassRangeDataset(train_samples, train_labels, 0, args.base_max_class,
                                      data.train_transform(args.image_size), args.max_per_class,
                                      mark_unreadable=True)
    val_ds = data.ClassRangeDataset(val_samples, val_labels, 0, args.base_max_class,
                                    data.val_transform(args.image_size, args.eval_resize_ratio),
                                    mark_unreadable=True)
    for name, ds in (("train", train_ds), ("val", val_ds)):
        if len(ds) == 0:
            raise DataError(f"no {name} images with labels in [0, {args.base_max_class})")
    per_rank = args.batch_size // world.world
    if per_rank < 1:
        raise DataError(f"--batch_size {args.batch_size} is smaller than the {world.world} processes")
    pin = device.type == "cuda"
    train_sampler = DistributedSampler(train_ds, num_replicas=world.world, rank=world.rank,
                                       shuffle=True, seed=args.seed, drop_last=False)
    generator = torch.Generator()
    train_loader = data.make_loader(train_ds, per_rank, args.num_workers, sampler=train_sampler,
                                    pin_memory=pin, generator=generator)
    val_loader = data.make_loader(val_ds, per_rank, args.num_workers,
                                  sampler=ShardSampler(len(val_ds), world.rank, world.world),
                                  pin_memory=pin)
    info = {"train_images": len(train_ds), "val_images": len(val_ds),
            "train_label_file": train_label_file, "val_label_file": val_label_file,
            "batch_size_per_process": per_rank}
    return DataParts(train_loader, val_loader, generator, info, class_order,
                     folders.sample_classes(train_samples))


def log(world, msg):
    if world.main:
        print(msg, flush=True)


def setup_device(args):
    """(device, world): the device of this process and the world it belongs to."""
    device = resolve_device(args.device)
    world = Dist.from_args(args, device)
    if device.type == "cuda":
        if world.enabled:  # one GPU per process, chosen by torchrun's LOCAL_RANK (or --gpu / the rank)
            if world.local_rank >= torch.cuda.device_count():
                raise DataError(f"process {world.local_rank} of this node has no GPU "
                                f"({torch.cuda.device_count()} visible); lower --nproc_per_node")
            device = torch.device("cuda", world.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    return device, world


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    device, world = setup_device(args)
    set_cpu_threads(args.num_threads)
    configure_tf32(args.tf32)
    # Every input is checked before the process group exists, so a bad path fails fast everywhere.
    parts = build_data(args, world, device)
    resume_path = find_resume_file(args) if args.resume else None

    world.init(device, args.dist_backend)
    for note in world.notes:
        log(world, f"note: {note}")
    try:
        if args.evaluate:
            evaluate_only(args, world, device, parts, resume_path)
        else:
            run(args, world, device, parts, resume_path)
    finally:
        world.close()
    return 0


def evaluate_only(args, world, device, parts, resume_path):
    """Val top-1/top-5 on the base classes of any base-init checkpoint, its fc rows mapped to the
    class order (a reference checkpoint's alphabetical rows included)."""
    tally = data.UnreadableTally(args.skip_corrupt_images)
    model = load_base_network(resume_path, parts.class_order, parts.class_folders,
                              num_classes=min(args.num_classes, len(parts.class_order)),
                              label_space=args.ckpt_label_space, log=lambda msg: log(world, msg)).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    top1, top5 = evaluate(model, parts.val_loader, args, device, world, tally)
    log(world, f"{resume_path}: val top-1 {top1:.2f}%  top-5 {top5:.2f}%  "
               f"({parts.info['val_images']} images of classes [0, {args.base_max_class}))")


@dataclasses.dataclass
class Training:
    """The network, its optimisation state and the progress of one training run."""

    model: nn.Module  # the bare network (what is evaluated and saved)
    net: nn.Module  # what trains: the DDP wrapper of ``model``, or ``model`` itself
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    class_order: list  # fc row k is class_order[k] (recorded in every checkpoint)
    criterion: nn.Module = dataclasses.field(default_factory=nn.CrossEntropyLoss)
    start_epoch: int = 0
    best_acc1: float = -1.0
    best_epoch: int = None
    history: list = dataclasses.field(default_factory=list)


def build_training(args, world, device, class_order):
    """A freshly initialised network (from --seed) with its optimizer, lr schedule and scaler."""
    seed_everything(args.seed)
    model = build_resnet18(args.num_classes).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if world.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step_size,
                                                gamma=args.lr_gamma)
    # float16 needs its gradients scaled; bfloat16 has float32's range and needs none.
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype(device) == torch.float16)
    return Training(model, net, optimizer, scheduler, scaler, list(class_order))


def start_at_epoch(t, epoch):
    """--start-epoch: begin at ``epoch`` with that epoch's lr (the schedule stepped as if the
    earlier epochs had run) and data order (every epoch draws from (seed, epoch, rank))."""
    with warnings.catch_warnings():  # stepping the schedule before any optimizer step is the point
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epoch):
            t.scheduler.step()
    t.start_epoch = epoch


def resume_training(t, args, world, path):
    """Continue ``t`` from a last checkpoint made with the same run-defining settings.

    Checkpoints of the previous version of this script carry no fingerprint: theirs is taken from
    the arguments they store. Their generators are not restored, and need not be: every epoch
    reseeds all of them from (seed, epoch, rank) before its first draw."""
    try:
        ckpt = load_run_checkpoint(path, KIND, map_location="cpu")
    except CheckpointError as err:
        raise CheckpointError(f"{err} (--resume takes this script's last checkpoint, "
                              "with the optimizer state; best_* checkpoints hold no optimizer state)") from None
    saved = dict(ckpt.get("fingerprint") or fingerprint(ckpt.get("args", {}), RUN_DEFINING))
    for key, value in LATER_DEFINING.items():  # what a checkpoint made before the setting existed used
        if saved.get(key) is None:
            saved[key] = value
    diff = fingerprint_diff(saved, fingerprint(args, RUN_DEFINING))
    if diff is not None:
        raise InputError(f"{path} was trained with other settings ({diff}); use the original "
                         "settings or another --save_dir")
    recorded = ckpt.get("class_order")
    if recorded is not None and list(recorded) != t.class_order:
        raise InputError(f"{path} was trained in another class order than the label files in "
                         f"{args.labels_dir} give; use the label files it was trained with or another --save_dir")
    t.model.load_state_dict(ckpt["state_dict"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") and t.scaler.is_enabled():
        t.scaler.load_state_dict(ckpt["scaler"])
    t.start_epoch, t.best_acc1 = int(ckpt["epoch"]), float(ckpt["best_acc1"])
    t.best_epoch, t.history = ckpt.get("best_epoch"), list(ckpt.get("history", []))
    if "fingerprint" in ckpt:
        restore_rng(ckpt["rng"])
    log(world, f"resumed from {path} after epoch {t.start_epoch}")


def run(args, world, device, parts, resume_path):
    t = build_training(args, world, device, parts.class_order)
    if resume_path:
        resume_training(t, args, world, resume_path)
    elif args.start_epoch:
        start_at_epoch(t, args.start_epoch)
    os.makedirs(args.save_dir, exist_ok=True)
    if world.main:
        write_json(os.path.join(args.save_dir, "config.json"),
                   {**vars(args), "world_size": world.world, **parts.info})
    log(world, f"training ResNet-18 ({args.num_classes}-way fc) on classes [0, {args.base_max_class}): "
               f"{parts.info['train_images']} train / {parts.info['val_images']} val images, "
               f"{world.world} process(es) on {device.type}, batch {args.batch_size}")
    if args.num_classes > len(t.class_order):
        log(world, f"note: the label files name {len(t.class_order)} classes; fc rows "
                   f"{len(t.class_order)}..{args.num_classes - 1} stand for no class")
    if t.start_epoch >= args.epochs:
        log(world, f"nothing to do: {t.start_epoch} of {args.epochs} epochs already done")
        return
    tally = data.UnreadableTally(args.skip_corrupt_images)
    for epoch in range(t.start_epoch, args.epochs):
        record = train_epoch(t, args, world, device, parts, epoch, tally)
        save_epoch(t, args, world, device, record, parts.info, tally)
    log(world, f"best val top-1 {t.best_acc1:.2f}% (epoch {t.best_epoch}) -> {best_path(args)}")


def best_path(args):
    return os.path.join(args.save_dir, "best_" + args.ckpt_file)


def train_epoch(t, args, world, device, parts, epoch, tally):
    """One epoch of training and its evaluation; returns the epoch's record (also in t.history)."""
    # Each epoch draws its data order and augmentations from (seed, epoch, rank) alone, so a
    # resumed run draws what an uninterrupted one would.
    seed = epoch_seed(args.seed, epoch, world.rank)
    seed_everything(seed)
    parts.generator.manual_seed(seed)
    tally.count = 0
    parts.train_loader.sampler.set_epoch(epoch)
    lr = t.optimizer.param_groups[0]["lr"]
    t0 = time.time()
    loss, train_top1, n_train = train_one_epoch(t.net, parts.train_loader, t.criterion, t.optimizer, t.scaler,
                                                args, device, world, epoch, tally)
    train_s = time.time() - t0
    world.sync_buffers(t.model)
    # The bare module, not the DDP wrapper: each rank's val shard may have its own number of
    # batches, and a wrapper forward could wait on a collective the others never join.
    top1, top5 = evaluate(t.model, parts.val_loader, args, device, world, tally)
    t.scheduler.step()
    record = {"epoch": epoch + 1, "lr": lr, "train_loss": loss, "train_top1": train_top1,
              "val_top1": top1, "val_top5": top5, "train_seconds": train_s,
              "train_img_per_s": n_train / max(train_s, 1e-9),
              "epoch_seconds": time.time() - t0}
    t.history.append(record)
    return record


def labelled_weights(t):
    """The weights with the label space they were trained in: fc row k is class_order[k]."""
    return {"state_dict": t.model.state_dict(), "class_order": t.class_order, "label_space": "class_order"}


def save_epoch(t, args, world, device, record, info, tally):
    """Best and last checkpoints and results.json (rank 0), and the epoch's log line."""
    is_best = record["val_top1"] > t.best_acc1
    if is_best:
        t.best_acc1, t.best_epoch = record["val_top1"], record["epoch"]
    skipped = int(world.sum([tally.count], device)[0])
    last_path = os.path.join(args.save_dir, args.ckpt_file)
    if world.main:
        if is_best:
            save_checkpoint(best_path(args), {"arch": "resnet18", "epoch": record["epoch"],
                                              "best_acc1": t.best_acc1, **labelled_weights(t)})
        save_run_checkpoint(last_path, KIND, fingerprint(args, RUN_DEFINING), {
            "arch": "resnet18", "epoch": record["epoch"], **labelled_weights(t),
            "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
            "scaler": t.scaler.state_dict() if t.scaler.is_enabled() else None, "best_acc1": t.best_acc1,
            "best_epoch": t.best_epoch, "history": t.history, "rng": capture_rng(), "args": vars(args)})
        write_json(os.path.join(args.save_dir, "results.json"), {
            "history": t.history, "best_val_top1": t.best_acc1, "best_epoch": t.best_epoch,
            "best_checkpoint": best_path(args), "last_checkpoint": last_path,
            "skipped_unreadable_images": skipped, **info})
    log(world, f"epoch {record['epoch']}/{args.epochs}: lr {record['lr']:.4g}  loss {record['train_loss']:.4f}  "
               f"train top-1 {record['train_top1']:.2f}%  val top-1 {record['val_top1']:.2f}%  "
               f"top-5 {record['val_top5']:.2f}%  {record['train_img_per_s']:.1f} img/s  "
               f"{record['epoch_seconds']:.0f} s" + ("  (best)" if is_best else "")
               + (f"  [{skipped} unreadable images skipped]" if skipped else ""))


if __name__ == "__main__":
    run_cli(main, prog="train_base_init_network_from_scratch.py")
