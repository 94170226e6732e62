"""The trainer: base initialisation, streaming (REMIND / Fine-Tune), offline and growing-prefix
training, evaluation at every boundary, checkpoints. Its progress is one ``TrainerState``."""
import dataclasses
import math
import os
import time
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from remind.runtime import progress_disabled
from remind.streaming import StreamingStep, StreamItem
from vqa_experiments.stream_order import reference_val_batches
from vqa_experiments.models import count_parameters
from vqa_experiments.training import checkpoints
from vqa_experiments.training.network import build_network, make_optimizer
from vqa_experiments.training.results import (describe_embedding_init, run_summary, write_predictions,
                                                     write_results)
from vqa_experiments.training.step import EMA, make_buffer, minibatch_update, question_step_parts
from vqa_experiments.vqa_metrics import vqa_accuracy_report


@dataclasses.dataclass
class TrainerState:
    """Where a run is; checkpointed as a plain dict (``dataclasses.asdict``)."""

    phase: Optional[str] = None            # None (not started), base_init, stream, offline, full, done
    epoch: int = 0                         # epochs finished in the current epoch phase
    perm: Optional[torch.Tensor] = None    # the current epoch's row permutation (None between epochs)
    batch_pos: int = 0                     # rows of ``perm`` already trained on
    t: int = 0                             # stream position (questions streamed)
    subset: int = 0                        # --full: prefixes finished
    global_step: int = 0                   # optimizer steps of the run
    run_seconds: float = 0.0               # run time up to this checkpoint, over every process of the run

    def reset_epochs(self):
        self.epoch, self.perm, self.batch_pos = 0, None, 0


class StopRun(Exception):
    """Raised to end the run early (``--stop_after_steps``) right after a checkpoint."""


@torch.no_grad()
def predict(net, data, batch_size, batches=None):
    """Predicted answer indices for the whole validation split, in row order (the network's mode
    is restored). ``batches``: lists of row indices to evaluate together (default: consecutive
    chunks of ``batch_size`` rows in file order)."""
    was_training = net.training
    net.eval()
    if batches is None:
        batches = [np.arange(s, min(s + batch_size, data.num_val)) for s in range(0, data.num_val, batch_size)]
    preds = np.empty(data.num_val, dtype=np.int64)
    for rows in batches:
        q, v, ql = data.inputs("val", torch.as_tensor(rows, dtype=torch.int64))
        preds[rows] = net(q, v, ql).argmax(dim=1).cpu().numpy()
    net.train(was_training)
    return preds


def val_batches(model, data, data_order, batch_size):
    """The reference's validation batches for a model whose predictions depend on the batch
    (S-MAC: the padded question length), else None (file order; the result is the same)."""
    if not getattr(type(model), "eval_depends_on_batch", False):
        return None
    return reference_val_batches(data.val_qtype, data.split["val"]["ql"].numpy(), data_order, batch_size)


class Trainer:
    def __init__(self, args, cfg, data, device, log):
        self.args, self.cfg, self.data, self.device, self.log = args, cfg, data, device, log
        self.mode = args.mode
        self.save_dir = args.save_dir
        self.b0 = data.boundaries[0]
        self.boundary_set = set(data.boundaries)
        self.last_checkpoint_time = self.process_start = time.time()
        self.evaluations = []
        self.state = TrainerState()
        self.epoch_gen = torch.Generator().manual_seed(args.seed + 1)
        self.buffer = make_buffer(args) if self.mode == "remind" else None
        self.build_model()
        self.val_batches = val_batches(self.model, data, args.data_order, cfg["val_batch_size"])

    def build_model(self):
        """A fresh model, optimizer, EMA copy and streaming step (again per prefix with --full)."""
        cfg = self.cfg
        self.model, frozen, self.embedding_init = build_network(cfg, self.data, self.args.seed, self.device)
        self.optimizer = make_optimizer(self.model, cfg["lr"])
        self.ema = EMA(self.model, cfg["ema_decay"]) if self.args.use_exponential_averaging else None
        self.log(f"model: {cfg['model']} with {count_parameters(self.model):,} parameters "
                 f"({count_parameters(self.model, trainable_only=True):,} trainable), embedding "
                 f"{'frozen' if frozen else 'trainable'} ({describe_embedding_init(self.embedding_init)}), "
                 f"device {self.device}")
        self.parts = question_step_parts(self.model, self.optimizer, self.data, self.buffer,
                                         cfg["num_rehearsal_samples"], None if self.ema is None else self.ema.update)
        self.step = StreamingStep(self.parts, self.buffer, self.device)

    # ------------------------------------------------------------------------- evaluation
    def evaluate(self, tag, **info):
        """Evaluate (the EMA copy if any) on the whole validation set; record and write results."""
        data = self.data
        preds = predict(self.model if self.ema is None else self.ema.net, data, self.cfg["val_batch_size"],
                        self.val_batches)
        report = vqa_accuracy_report(preds, data.val_aidx, data.val_qtype, data.num_types, data.type_names)
        self.evaluations.append({"tag": tag, "mode": self.mode, **info, "global_step": self.state.global_step,
                                 **report})
        if self.args.save_predictions:
            write_predictions(self.save_dir, tag, data.val_qid, preds)
        self.write_results(complete=False)
        self.log(f"eval {tag}: overall {report['overall']:.4f}  mean-per-type {report['mean_per_type']:.4f}  "
                 f"harmonic-MPT(extra) {report['extras']['harmonic_mean_per_type']:.4f}")

    def write_results(self, complete):
        write_results(self.save_dir, run_summary(self.args, self.cfg, self.data, self.mode, self.evaluations,
                                                 complete, self.embedding_init))

    # ------------------------------------------------------------------------ checkpoints
    def elapsed(self):
        """Run time so far: what the checkpoint this process started from had recorded, plus this
        process's time (work lost to a crash after the last checkpoint is not counted)."""
        return self.state.run_seconds + time.time() - self.process_start

    def sync_clock(self):
        """Fold this process's time into the state (before it is checkpointed)."""
        now = time.time()
        self.state.run_seconds, self.process_start = self.elapsed(), now

    def save(self):
        self.sync_clock()
        checkpoints.save(self, os.path.join(self.save_dir, checkpoints.CHECKPOINT_PATH), checkpoints.RUN_KIND,
                         with_buffer=True)
        self.last_checkpoint_time = time.time()

    def resume(self, path):
        ckpt = checkpoints.load(self, path, checkpoints.RUN_KIND)
        self.state = TrainerState(**checkpoints.restore(self, ckpt, path))
        self.process_start = time.time()

    def load_base_init(self, src_dir):
        """Start streaming from the base initialisation another run saved with the same settings."""
        path = os.path.join(src_dir, checkpoints.BASE_INIT_NAME)
        ckpt = checkpoints.load(self, path, checkpoints.BASE_INIT_KIND)
        self.state = TrainerState(**checkpoints.restore(self, ckpt, path))
        for r in self.evaluations:
            r["mode"] = self.mode
        self.state.phase, self.state.t = "stream", 0
        self.state.reset_epochs()
        self.log(f"base initialisation loaded from {path} (global step {self.state.global_step})")

    def after_step(self):
        """Checkpoint on the step or time interval; stop when --stop_after_steps is reached."""
        args, step = self.args, self.state.global_step
        if args.stop_after_steps is not None and step >= args.stop_after_steps:
            self.save()
            raise StopRun()
        if args.checkpoint_interval and step % args.checkpoint_interval == 0:
            self.save()
        elif args.checkpoint_interval_min and \
                time.time() - self.last_checkpoint_time > 60.0 * args.checkpoint_interval_min:
            self.save()

    # ------------------------------------------------------------------------------ loops
    def _bar(self, total, initial, desc, unit):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=progress_disabled(self.args),
                    mininterval=2.0, leave=False)

    def run_epoch(self, num_rows, bar):
        """The rest of the current epoch (a fresh permutation when it starts), one batch per step."""
        st, bs = self.state, self.cfg["train_batch_size"]
        if st.perm is None:
            st.perm, st.batch_pos = torch.randperm(num_rows, generator=self.epoch_gen), 0
        while st.batch_pos < num_rows:
            idx = st.perm[st.batch_pos:st.batch_pos + bs]
            loss = minibatch_update(self.parts, self.data, idx)
            st.global_step += 1
            st.batch_pos += len(idx)
            bar.update(1)
            if bar.n % 50 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            self.after_step()

    def run_epochs(self, num_rows, phase, label, final_boundary=None):
        """``max_epochs`` epochs of shuffled mini-batches over rows [0, num_rows), resumable mid-epoch;
        evaluations every ``test_interval`` epochs and after the last."""
        cfg, st = self.cfg, self.state
        bs, max_epochs = cfg["train_batch_size"], cfg["max_epochs"]
        steps_per_epoch = math.ceil(num_rows / bs)
        done = st.epoch * steps_per_epoch + ((st.batch_pos + bs - 1) // bs if st.perm is not None else 0)
        with self._bar(max_epochs * steps_per_epoch, done, label, "batch") as bar:
            while st.epoch < max_epochs:
                self.run_epoch(num_rows, bar)
                st.epoch += 1
                st.perm, st.batch_pos = None, 0
                if st.epoch % cfg["test_interval"] == 0 or st.epoch == max_epochs:
                    info = {"phase": phase, "epoch": st.epoch, "samples_seen": num_rows}
                    if st.epoch == max_epochs and final_boundary is not None:
                        info["boundary"] = final_boundary
                    self.evaluate(f"{label}_epoch_{st.epoch}", **info)
                self.save()

    def run_stream(self):
        """One step per question from the stream position on; evaluation + checkpoint at boundaries."""
        st, data = self.state, self.data
        n, k = data.num_train, self.cfg["num_rehearsal_samples"]
        kind = f"REMIND, {k} replays per sample" if self.buffer is not None else "Fine-Tune"
        self.log(f"streaming ({kind}): {n} questions, evaluations at {data.boundaries}")
        with self._bar(n, st.t, "stream", "q") as bar:
            while st.t < n:
                t = st.t
                if self.buffer is not None and t < self.b0:
                    # The base-init questions join the buffer (stored, not trained again).
                    self.buffer.add_batch(None, data.train_labels(t, self.b0), torch.arange(t, self.b0))
                    bar.update(self.b0 - t)
                    st.t = self.b0
                    continue
                loss = self.step(StreamItem(None, int(data.train_answers[t]), t))
                st.global_step += 1
                st.t = t + 1
                bar.update(1)
                if st.t % 200 == 0 and not bar.disable:
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                if st.t in self.boundary_set:
                    self.evaluate(f"boundary_{st.t}", phase="stream", samples_seen=st.t, boundary=st.t)
                    self.save()
                else:
                    self.after_step()

    def run_base_init(self):
        """Offline epochs on the first stream chunk; its end is saved for --base_init_from."""
        st = self.state
        self.log(f"base initialisation on {self.b0} questions for {self.cfg['max_epochs']} epochs")
        self.run_epochs(self.b0, "base_init", "base_init", final_boundary=self.b0)
        st.phase, st.t = "stream", 0
        st.reset_epochs()
        self.sync_clock()
        checkpoints.save(self, os.path.join(self.save_dir, checkpoints.BASE_INIT_NAME), checkpoints.BASE_INIT_KIND,
                         with_buffer=False)
        self.save()

    def run_full(self):
        """--full: a fresh model and optimizer trained offline on each stream prefix [0, boundary)."""
        st, bounds = self.state, self.data.boundaries
        while st.subset < len(bounds):
            b = bounds[st.subset]
            if st.epoch == 0 and st.perm is None:
                self.build_model()
            self.log(f"offline on the stream prefix [0, {b}) ({st.subset + 1}/{len(bounds)})")
            self.run_epochs(b, "full", f"full_{b}", final_boundary=b)
            st.subset += 1
            st.reset_epochs()
            self.save()

    def run(self):
        st = self.state
        if st.phase is None:
            streaming = self.mode in ("remind", "finetune")
            st.phase = ("base_init" if self.cfg["max_epochs"] > 0 else "stream") if streaming else self.mode
        if st.phase == "base_init":
            self.run_base_init()
        if st.phase == "stream":
            self.run_stream()
        elif st.phase == "offline":
            self.log(f"offline training on all {self.data.num_train} questions for {self.cfg['max_epochs']} epochs")
            self.run_epochs(self.data.num_train, "offline", "offline", final_boundary=self.data.num_train)
        elif st.phase == "full":
            self.run_full()
        st.phase = "done"
        self.write_results(complete=True)
        self.save()
