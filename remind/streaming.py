"""The streaming step, once for every experiment family.

Every REMIND learner streams the same way: draw replay items from the buffer, gather their stored
form (PQ codes, or rows of a question table), decode it to network inputs, optionally augment,
take one optimizer step on the new item plus the replayed ones, and make the new item replayable.
The families differ only in the parts, which are passed in (``StepParts``):

- image classification (``remind.model.REMINDModel``): SGD with a per-class learning rate, latent
  crops + mixup, the new item joins the buffer after its own step;
- VQA: Adamax at a constant rate, no augmentation, the new question joins the buffer before the
  draw (so it can be replayed in its own step), an exponential moving average after each update;
- fine-tune baselines: the same step with no buffer or zero replay.

Everything the step touches stays on ``device``; the loss is returned as a tensor, so on CUDA a
step needs no host synchronisation unless the caller reads it.
"""
import contextlib
import dataclasses
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as nnf

from remind.threads import intra_op_threads


@dataclasses.dataclass
class StreamItem:
    """A new sample: its stored form (e.g. PQ codes; None when the buffer keeps only ids), label, id."""

    codes: Optional[torch.Tensor]
    label: int
    item_id: int


def mixup_cross_entropy(out, labels, labels_b=None, lam=None):
    """Mean over the batch of CE, or of lam*CE(a) + (1-lam)*CE(b) for mixed pairs."""
    loss = nnf.cross_entropy(out, labels, reduction="none")
    if labels_b is not None:
        loss = lam * loss + (1.0 - lam) * nnf.cross_entropy(out, labels_b, reduction="none")
    return loss.mean()


def cross_entropy(out, labels, labels_b=None, lam=None):
    """Plain mean cross-entropy (no mixing)."""
    return nnf.cross_entropy(out, labels)


@dataclasses.dataclass
class StepParts:
    """What makes one family's step its own.

    gather(item, slots) -> (stored, labels): the new item's and the replayed items' stored form
        (slots: buffer slots drawn this step, or None without a buffer), labels on the device.
    decode(stored) -> tuple of network inputs.
    augment(inputs, labels) -> (inputs, labels, labels_b, lam), or None for no augmentation.
    lr_for(label) -> learning rate for this step, or None to keep the optimizer's own.
    loss(out, labels, labels_b, lam) -> scalar tensor.
    after_update(): runs after each optimizer step (e.g. a moving average of the weights).
    """

    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    gather: Callable
    decode: Callable
    num_draw: int = 0
    augment: Optional[Callable] = None
    lr_for: Optional[Callable] = None
    loss: Callable = mixup_cross_entropy
    add_before_replay: bool = False
    after_update: Optional[Callable] = None


class StreamingStep:
    """One optimizer step for one new item, with replay (``__call__``); counts its steps.

    ``timer``: None, or a callable(stage_name) -> context manager (benchmarks time each stage).
    ``small_stage_threads``: CPU threads for the few-millisecond stages (sample, decode, augment);
    None keeps torch's setting (see ``remind.threads``).
    """

    def __init__(self, parts: StepParts, buffer: Any = None, device="cpu", small_stage_threads=None):
        self.parts = parts
        self.buffer = buffer
        self.device = torch.device(device)
        self.small_stage_threads = small_stage_threads
        self.timer = None
        self.steps = 0

    def _stage(self, name):
        return self.timer(name) if self.timer is not None else contextlib.nullcontext()

    def __call__(self, item: StreamItem):
        p, buffer = self.parts, self.buffer
        # The new item joins first when it may be replayed in its own step (VQA).
        if buffer is not None and p.add_before_replay:
            with self._stage("buffer_add"):
                buffer.add(item.codes, item.label, item.item_id)
        with intra_op_threads(self.small_stage_threads, self.device):
            # Replay draw: uniform, without replacement; gather the stored form of new + replayed.
            with self._stage("sample"):
                slots = buffer.sample(p.num_draw) if buffer is not None else None
                stored, labels = p.gather(item, slots)
            with self._stage("decode"):
                inputs = p.decode(stored)
            with self._stage("augment"):
                labels_b = lam = None
                if p.augment is not None:
                    inputs, labels, labels_b, lam = p.augment(inputs, labels)
        # One optimizer step on the mean loss of the batch.
        with self._stage("update_f"):
            if p.lr_for is not None:
                lr = p.lr_for(item.label)
                for group in p.optimizer.param_groups:
                    group["lr"] = lr
            out = p.network(*inputs)
            loss = p.loss(out, labels, labels_b, lam)
            p.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            p.optimizer.step()
            if p.after_update is not None:
                p.after_update()
        # Otherwise the new item becomes replayable after its own step (image classification).
        if buffer is not None and not p.add_before_replay:
            with self._stage("buffer_add"):
                buffer.add(item.codes, item.label, item.item_id)
        self.steps += 1
        return loss.detach()
