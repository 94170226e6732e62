"""The VQA parts of the shared streaming step (``remind.streaming``), and the mini-batch update
of the epoch phases, which uses the same parts.

A question's stored form is its row in the train table: the replay buffer keeps only row indices
and answers (``code_shape=None``); images exist once, as PQ codes, and are decoded per batch.
"""
import copy

import torch

from remind.replay_buffer import ReplayBuffer
from remind.streaming import StepParts, cross_entropy


class EMA:
    """An exponential moving average of a network's weights (evaluated instead of the network)."""

    def __init__(self, model, decay):
        self.model, self.decay = model, decay
        self.net = copy.deepcopy(model)
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self):
        for pe, p in zip(self.net.parameters(), self.model.parameters()):
            pe.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)


def make_buffer(args):
    """The replay buffer of row indices: unbounded, or at most --max_buffer_size questions."""
    if args.rehearsal_mode == "limited_buffer":
        # "queue" evicts the oldest item of the largest class (the reference's never evicted).
        eviction = "oldest" if args.buffer_replacement_strategy == "queue" else "random"
        return ReplayBuffer(None, capacity=args.max_buffer_size, device="cpu", seed=args.seed,
                            eviction=eviction)
    return ReplayBuffer(None, capacity=None, device="cpu", seed=args.seed)


def question_step_parts(model, optimizer, data, buffer, num_replay, after_update=None):
    """REMIND's VQA step: the new question joins the buffer first (it may be replayed in its own
    step), ``num_replay`` rows are drawn, one step on the plain mean cross-entropy of the batch.
    With ``buffer=None`` (Fine-Tune) the batch is the new question alone."""

    def gather(item, slots):
        rows = torch.tensor([item.item_id])
        if slots is not None:
            rows = torch.cat([rows, buffer.item_ids[slots.cpu()]])
        return rows, data.labels("train", rows)

    def decode(rows):
        return data.inputs("train", rows)

    return StepParts(network=model, optimizer=optimizer, gather=gather, decode=decode, num_draw=num_replay,
                     loss=cross_entropy, add_before_replay=True, after_update=after_update)


def minibatch_update(parts, data, rows):
    """One optimizer step on the train rows ``rows`` (the epoch phases) with the streaming step's
    network, loss, optimizer and after-update (the EMA); returns the loss tensor."""
    inputs = parts.decode(rows)
    labels = data.labels("train", rows)
    loss = parts.loss(parts.network(*inputs), labels, None, None)
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parts.optimizer.step()
    if parts.after_update is not None:
        parts.after_update()
    return loss
