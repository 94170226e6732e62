"""The offline upper bound: F trained on everything seen so far, several shuffled epochs.

Omega (``remind.metrics.omega``) divides a streaming learner's accuracy at each evaluation point by
that of an offline learner trained, with the same network, on all the data seen up to that point.
``train_offline`` trains F on stored codes (PQ or any ``remind.latent_codecs`` codec, decoded a
batch at a time); ``train_epochs`` is the loop itself for any inputs (e.g. images through the whole
network). Both return the trained module in eval mode.

Defaults (``OfflineConfig``) are the base initialisation's recipe: 40 epochs of mini-batches of 256,
SGD with momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 every 15 epochs (``schedule="step"``);
``schedule="cosine"`` anneals from lr to 0 over all the mini-batches instead. The shuffling has its
own generator seeded by ``seed``, so on the CPU the same network, data and settings give
bit-identical weights; nothing else draws random numbers.

``offline_cache_key`` hashes the settings that define an offline run, so two methods evaluated
against the same bound (same data, classes, evaluation point, epochs, seed, ...) reuse one run.
"""
import dataclasses
import hashlib
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as nnf

from remind.errors import InputError

SCHEDULES = ("step", "cosine")
# Part of every cache key: bump it when a change to this module changes what an offline run learns.
OFFLINE_CACHE_VERSION = 1


class OfflineError(InputError, ValueError):
    """Invalid offline-training settings, data or cache settings."""


@dataclasses.dataclass
class OfflineConfig:
    """Offline training settings (defaults: the base initialisation's recipe)."""

    epochs: int = 40
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"  # or "cosine"
    lr_step_size: int = 15  # "step": epochs between decays
    lr_gamma: float = 0.1  # "step": factor at each decay
    seed: int = 0  # the shuffling's generator

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise OfflineError(f"the offline lr schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "lr_step_size"):
            if int(getattr(self, name)) < 1:
                raise OfflineError(f"offline {name} must be a positive integer, got {getattr(self, name)}")
        if not (self.lr > 0 and self.momentum >= 0 and self.weight_decay >= 0 and self.lr_gamma > 0):
            raise OfflineError("offline lr and lr_gamma must be positive, momentum and weight_decay non-negative")

    def lr_at(self, epoch, batch, batches_per_epoch):
        """The learning rate of mini-batch ``batch`` (0-based) of epoch ``epoch`` (0-based)."""
        if self.schedule == "step":
            return self.lr * self.lr_gamma ** (epoch // self.lr_step_size)
        done = epoch * batches_per_epoch + batch
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * done / (self.epochs * batches_per_epoch)))


def train_epochs(network, inputs_for, labels, config=None, device="cpu", progress=None):
    """Train ``network`` on items 0..N-1 for ``config.epochs`` shuffled epochs; returns it in eval mode.

    inputs_for(indices) -> the network's input for those items (indices: a CPU LongTensor), on
        ``device``; labels: [N] class indices; progress(epoch, epochs, mean_loss) after each epoch
        (epoch counted from 1; reading the loss synchronises once per epoch).
    """
    config = config or OfflineConfig()
    device = torch.device(device)
    labels = torch.as_tensor(labels).reshape(-1).to(device, torch.int64)
    n = labels.numel()
    if n == 0:
        raise OfflineError("offline training needs at least one item")
    network = network.to(device).train()
    optimizer = torch.optim.SGD(network.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(int(config.seed))
    batches = math.ceil(n / config.batch_size)
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=shuffle)
        total = torch.zeros((), device=device)
        for b in range(batches):
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(epoch, b, batches)
            loss = nnf.cross_entropy(network(inputs_for(idx)), labels[idx.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        if progress is not None:
            progress(epoch + 1, config.epochs, float(total) / n)
    return network.eval()


def train_offline(network, codes, labels, codec, config=None, device="cpu", progress=None):
    """Train F (``network``, taking decoded feature maps) on stored codes [N, H, W, M] and their
    labels, decoding each mini-batch with ``codec.decode_maps`` on ``device``; returns F in eval mode.
    ``codes`` may live on the host or the device (only each mini-batch is moved)."""
    if len(codes) != len(labels):
        raise OfflineError(f"{len(codes)} items of codes but {len(labels)} labels")
    codec.to(device)

    def inputs_for(idx):
        return codec.decode_maps(codes.index_select(0, idx.to(codes.device)).to(device, non_blocking=True))

    return train_epochs(network, inputs_for, labels, config=config, device=device, progress=progress)


# ------------------------------------------------------------------------------- cache key
def _plain(value, where="settings"):
    """``value`` as plain JSON data; anything without one obvious plain form is an error."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise OfflineError(f"{where}: keys must be strings, got {key!r}")
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        items = value.tolist() if isinstance(value, np.ndarray) else value
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(items)]
    raise OfflineError(f"{where}: a {type(value).__name__} cannot define an offline run "
                       "(use numbers, strings, lists or dicts)")


def offline_cache_key(settings: dict, length: int = 20) -> str:
    """A stable hex key of the settings that define an offline run (key order does not matter;
    lists and tuples are the same; 1 and 1.0 are not, so pass each setting in one type)."""
    if not isinstance(settings, dict):
        raise OfflineError(f"offline cache settings must be a dict, got {type(settings).__name__}")
    payload = {"offline_cache_version": OFFLINE_CACHE_VERSION, "settings": _plain(settings)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:int(length)]
