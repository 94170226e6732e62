"""Briefly train a small ResNet on easy-VQA images (TDIUC layout) to tell colours and shapes.

No pretrained weights exist offline, so the demo's frozen CNN is trained here for a fixed number
of steps: each train image gets a colour label (from its ``color`` questions) and a shape label
(from its ``object_recognition`` questions). Only the part that the demo keeps is trained: the
ResNet trunk up to ``--layer``, then global average pooling and one linear layer over both label
sets (cross-entropy on each). The saved state_dict (torchvision names; ``fc`` is this head) is
given to ``extract_image_features.py --weights PATH --layer LAYER``, which keeps the trunk only.
Held-out accuracy on the ``val2014`` images is printed and saved in the checkpoint.
"""
import argparse
import time

import numpy as np
import torch

import remind  # noqa: F401  (before torchvision: compatibility shim)
import torchvision

from remind.checkpoint import save_checkpoint
from remind.feature_store import UnreadableImages, collate_images
from remind.runtime import add_run_arguments, resolve_device, run_cli, set_cpu_threads
from vqa_experiments.preprocess import tdiuc
from vqa_experiments.preprocess.features import (DEFAULTS, IMAGENET_MEAN, LAYERS,
                                                 UNREADABLE_MESSAGE, ImageFiles, list_images,
                                                 resnet_trunk)
from vqa_experiments.vqa_data import VQADataError, read_json

LABEL_TYPES = ("color", "object_recognition")


def image_labels(root, split, classes):
    """``{iid: [label per type or -1]}`` from the answers of the image-level question types."""
    labels = {}
    path = tdiuc.annotations_path(root, split)
    for a in read_json(path, f"{split} annotations").get("annotations", []):
        t = a.get("question_type")
        if t not in classes:
            continue
        answer = a["answers"][0]["answer"]
        if answer not in classes[t]:
            if split == "train":
                classes[t].append(answer)
            else:
                continue
        row = labels.setdefault(int(a["image_id"]), [-1] * len(LABEL_TYPES))
        row[LABEL_TYPES.index(t)] = classes[t].index(answer)
    return labels


def load_split(root, split, classes, image_size, std, num_workers):
    image_root, items = list_images("tdiuc", root)
    folder = f"{split}2014/"
    items = [(p, i) for p, i in items if p.startswith(folder)]
    labels = image_labels(root, split, classes)
    items = [(p, i) for p, i in items if i in labels]
    if not items:
        raise VQADataError(f"{root}: no {split} image has a color or object_recognition answer")
    loader = torch.utils.data.DataLoader(
        ImageFiles(image_root, items, image_size, IMAGENET_MEAN, std),
        batch_size=256, num_workers=num_workers, collate_fn=collate_images)
    unreadable = UnreadableImages(message=UNREADABLE_MESSAGE)
    xs = []
    for x, _, bad in loader:
        unreadable.handle(bad)
        xs.append(x)
    y = torch.tensor([labels[i] for _, i in items], dtype=torch.int64)
    return torch.cat(xs), y


def head_losses_and_hits(logits, y, sizes):
    loss, hits = 0.0, []
    start = 0
    for k, size in enumerate(sizes):
        part, target = logits[:, start:start + size], y[:, k]
        start += size
        mask = target >= 0
        if mask.any():
            loss = loss + torch.nn.functional.cross_entropy(part[mask], target[mask])
        hits.append(((part.argmax(1) == target) & mask).sum().item())
    return loss, hits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True, help="easy-VQA in the TDIUC layout")
    parser.add_argument("--output", required=True, help="checkpoint to write (state_dict)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--layer", default="layer3", choices=LAYERS,
                        help="last ResNet stage trained (and later kept by the extractor)")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--num_workers", type=int, default=0)
    add_run_arguments(parser)  # --device, --seed, --num_threads, --progress (no bars here)
    args = parser.parse_args(argv)
    set_cpu_threads(args.num_threads)
    device = resolve_device(args.device)

    torch.manual_seed(args.seed)
    t0 = time.time()
    std = DEFAULTS["tdiuc"][2]
    classes = {t: [] for t in LABEL_TYPES}
    x_tr, y_tr = load_split(args.data_root, "train", classes, args.image_size, std,
                            args.num_workers)
    x_va, y_va = load_split(args.data_root, "val", classes, args.image_size, std,
                            args.num_workers)
    sizes = [len(classes[t]) for t in LABEL_TYPES]
    try:
        trunk = resnet_trunk(torchvision.models.get_model(args.arch, weights=None), args.layer)
    except ValueError as err:
        raise VQADataError(f"--arch {args.arch!r}: {err}") from None
    with torch.no_grad():
        channels = trunk.eval()(x_tr[:1]).shape[1]
    fc = torch.nn.Linear(channels, sum(sizes))
    model = torch.nn.Sequential(trunk, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), fc)
    model = model.to(device, memory_format=torch.channels_last)
    x_tr = x_tr.contiguous(memory_format=torch.channels_last)
    x_va = x_va.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in range(args.steps):
        idx = torch.randint(0, len(x_tr), (args.batch_size,), generator=gen)
        loss, _ = head_losses_and_hits(model(x_tr[idx].to(device)), y_tr[idx].to(device), sizes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    hits, counts = np.zeros(len(sizes)), (y_va >= 0).sum(0).numpy()
    with torch.no_grad():
        for s in range(0, len(x_va), 256):
            _, h = head_losses_and_hits(model(x_va[s:s + 256].to(device)),
                                        y_va[s:s + 256].to(device), sizes)
            hits += h
    acc = {t: float(hits[k] / max(counts[k], 1)) for k, t in enumerate(LABEL_TYPES)}
    state = {**trunk.state_dict(), "fc.weight": fc.weight, "fc.bias": fc.bias}
    save_checkpoint(args.output, {"state_dict": {k: v.detach().cpu() for k, v in state.items()},
                                  "arch": args.arch, "layer": args.layer,
                                  "image_size": args.image_size,
                                  "classes": classes, "val_accuracy": acc, "steps": args.steps})
    print(f"trained {args.arch} up to {args.layer} for {args.steps} steps in {time.time() - t0:.0f} s; held-out "
          + ", ".join(f"{t} accuracy {a:.3f}" for t, a in acc.items()) + f"; wrote {args.output}")


if __name__ == "__main__":
    run_cli(main)
