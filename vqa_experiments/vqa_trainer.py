#!/usr/bin/env python3
"""Streaming VQA with REMIND (CLEVR / TDIUC), the Fine-Tune and offline baselines.

The protocol of REMIND's reference VQA trainer:

- **base initialisation**: the first stream chunk (rows ``[0, boundaries[0])``) is learned offline
  for ``max_epochs`` epochs (20) in random mini-batches with Adamax at a constant learning rate;
  evaluations after every ``test_interval``-th epoch (8, 16) and after the last one (20). The same
  optimizer, with its state, continues into streaming.
- **REMIND** (``--stream_with_rehearsal``): one question at a time; its index joins the replay
  buffer first, then ``num_rehearsal_samples`` (50) distinct indices are drawn uniformly from the
  whole buffer (the current one and the base-init questions included) and one Adamax step is taken
  on the 51 questions (``remind.streaming.StreamingStep`` with the parts of
  ``vqa_experiments.training.step``). The buffer stores only indices and answers
  (``remind.replay_buffer.ReplayBuffer`` with ``code_shape=None``); images are kept once, as uint8
  PQ codes, and decoded on the fly with ``remind.quantizer.ProductQuantizer`` for streaming, replay
  and evaluation alike. ``--rehearsal_mode limited_buffer --max_buffer_size K`` bounds the buffer,
  evicting from the class (answer) with the most stored questions: a random one (``random``) or its
  oldest (``queue``).
- **Fine-Tune** (``--stream``): after the same base initialisation, every question of the stream
  (base-init ones included) gets one step on itself alone (batch of 1), no replay.
- **offline** (``--offline``, or no mode flag as in the reference): ``max_epochs`` epochs over the
  whole training set. ``--full``: one fresh model per boundary, trained offline on the stream
  prefix up to it (the reference's growing-subsets mode, which was broken).

Evaluation on the whole validation set at every boundary; results (overall accuracy, accuracy per
question type, mean-per-type; harmonic mean-per-type as a labelled extra) go to
``<save_dir>/results.json``, ``train_log.csv`` and ``predictions/<tag>.json``. Checkpoints
(``<save_dir>/checkpoints/latest.pt``) are atomic; ``--resume`` continues exactly (model,
optimizer, buffer, stream position, RNG states), so an interrupted run ends with the same results
as an uninterrupted one.

Deviations from the reference, all deliberate: the replay buffer holds true stream positions (the
reference used a running counter over length-sorted chunks); training batches are not sorted by
question length (packing does not need it); ``--seed`` makes runs repeatable; checkpoints/resume
exist; the EMA option also averages during streaming; the offline modes work. S-MAC, whose
predictions depend on the padded length of the batch, is evaluated in the reference's validation
batches (``stream_order.reference_val_batches``); UpDown's predictions do not depend on the batch.

Every input (flags, config, data files, the checkpoint to start from) is checked before anything is
written; a bad one is one line ``vqa_trainer: error: ...`` and exit status 2.
"""
import argparse
import os

import remind  # noqa: F401  (before anything imports torchvision)
from remind.runtime import StartupLog, add_run_arguments, resolve_device, run_cli, set_cpu_threads
from vqa_experiments.training.checkpoints import CHECKPOINT_PATH, LEGACY_CHECKPOINT_NAME
from vqa_experiments.training.config import FLAG_KEYS, TrainerError, load_config
from vqa_experiments.training.data import FILE_KEYS, VQAStreamData
from vqa_experiments.training.run_folder import write_config
from vqa_experiments.training.trainer import StopRun, Trainer

EMBEDDING_FILE_HELP = ("word-embedding init for embedding_init 'file' (default: <data_dir>/embedding_init_300d_<ds>.npy); "
                       "a matrix without the <unk> row (the reference's glove6b_init_300d_<ds>.npy) gets a zero one")


def _add_mode_arguments(p):
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--stream_with_rehearsal", dest="mode", action="store_const", const="remind",
                       help="REMIND: stream one question at a time with replay")
    modes.add_argument("--stream", dest="mode", action="store_const", const="finetune",
                       help="the Fine-Tune baseline: stream one question at a time, no replay")
    modes.add_argument("--offline", dest="mode", action="store_const", const="offline",
                       help="offline on the whole training set (also the default without a mode flag)")
    modes.add_argument("--full", dest="mode", action="store_const", const="full",
                       help="offline on every stream prefix up to each boundary (a fresh model each)")
    p.add_argument("--rehearsal_mode", choices=["default", "limited_buffer"], default="default",
                   help="default: every seen question stays replayable; limited_buffer: at most --max_buffer_size")
    p.add_argument("--max_buffer_size", type=int, default=None)
    p.add_argument("--buffer_replacement_strategy", choices=["queue", "random"], default="random",
                   help="eviction from the largest class when the limited buffer is full: random item or oldest item")


def _add_config_arguments(p):
    p.add_argument("--config", "--config_name", dest="config", required=True,
                   help="config JSON file, or a name in vqa_experiments/configs (clevr_streaming, tdiuc_streaming, "
                        "easy_vqa_demo)")
    p.add_argument("--lr", type=float, default=None, help="overrides the config's learning rate")
    p.add_argument("--max_epochs", type=int, default=None, help="overrides the config (base-init / offline epochs)")
    p.add_argument("--test_interval", type=int, default=None, help="overrides the config (evaluate every N epochs)")
    p.add_argument("--num_rehearsal_samples", type=int, default=None, help="overrides the config (replays per step)")
    p.add_argument("--train_batch_size", type=int, default=None)
    p.add_argument("--val_batch_size", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (JSON value), e.g. --set model_args.dim=64")
    p.add_argument("--use_exponential_averaging", action="store_true",
                   help="evaluate an exponential moving average (decay ema_decay) of the weights")


class OneLineParser(argparse.ArgumentParser):
    """A bad command line is one line, ``vqa_trainer: error: ...``, and exit status 2 (as every other
    input error of the trainer), not argparse's usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    p = OneLineParser(prog="vqa_trainer", description="Streaming VQA with REMIND (CLEVR/TDIUC) and its "
                      "baselines.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", help="folder of the prepared data (DATA_FORMATS.md)")
    p.add_argument("--data_order", choices=["iid", "qtype"], required=True)
    _add_mode_arguments(p)
    _add_config_arguments(p)
    p.add_argument("--expt_name", default="vqa_run")
    p.add_argument("--save_dir", default=None, help="run folder (default: snapshots/<expt_name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --save_dir from its last checkpoint")
    p.add_argument("--base_init_from", default=None, metavar="RUN_DIR",
                   help="start streaming from the base initialisation saved by another run with the same settings")
    add_run_arguments(p, checkpoints=True)
    p.add_argument("--no_predictions", dest="save_predictions", action="store_false",
                   help="do not write predictions/<tag>.json")
    # Data files, each overriding the standard name in --data_dir.
    for key in FILE_KEYS:
        p.add_argument(f"--{key}_file", default=None, help=EMBEDDING_FILE_HELP if key == "embedding" else argparse.SUPPRESS)
    return p


def check_args(args):
    """Flag combinations argparse cannot express; fills the defaults that depend on other flags."""
    if args.mode is None:
        args.mode = "offline"
    if args.rehearsal_mode == "limited_buffer":
        if args.max_buffer_size is None or args.max_buffer_size < 1:
            raise TrainerError("--rehearsal_mode limited_buffer needs --max_buffer_size >= 1")
        if args.mode != "remind":
            raise TrainerError(f"--rehearsal_mode limited_buffer applies to --stream_with_rehearsal only "
                               f"(this is a {args.mode} run, which replays nothing)")
    elif args.max_buffer_size is not None:
        raise TrainerError("--max_buffer_size needs --rehearsal_mode limited_buffer")
    if args.base_init_from and args.mode not in ("remind", "finetune"):
        raise TrainerError("--base_init_from applies to --stream_with_rehearsal and --stream only")
    if args.save_dir is None:
        args.save_dir = os.path.join("snapshots", args.expt_name)
    if os.path.exists(os.path.join(args.save_dir, LEGACY_CHECKPOINT_NAME)):
        raise TrainerError(f"{args.save_dir} holds a run of an older version of this trainer "
                           f"({LEGACY_CHECKPOINT_NAME}), which cannot be resumed; choose another --save_dir")
    if os.path.exists(os.path.join(args.save_dir, CHECKPOINT_PATH)) and not args.resume:
        raise TrainerError(f"{args.save_dir} already holds a run; pass --resume to continue it or choose another "
                           f"--save_dir")


def check_replay_fits(args, cfg):
    """A limited buffer must hold at least the replays drawn per step."""
    k = cfg["num_rehearsal_samples"]
    if args.mode == "remind" and args.rehearsal_mode == "limited_buffer" and args.max_buffer_size < k:
        raise TrainerError(f"--max_buffer_size {args.max_buffer_size} is smaller than the {k} replays drawn per "
                           f"step (num_rehearsal_samples); use a buffer of at least {k} or fewer replays")


def start(trainer, args, log):
    """Resume, or start from another run's base initialisation, or start afresh; True on a resume."""
    ckpt_path = os.path.join(args.save_dir, CHECKPOINT_PATH)
    if args.resume and os.path.exists(ckpt_path):
        trainer.resume(ckpt_path)
        log(f"resumed from {ckpt_path}: phase {trainer.state.phase}, global step {trainer.state.global_step}")
        return True
    if args.base_init_from:
        trainer.load_base_init(args.base_init_from)
    elif args.resume:
        log(f"--resume: no checkpoint in {args.save_dir}, starting a new run")
    return False


def prepare(args, log):
    """Everything that reads input: config, device, data, model and any checkpoint to start from.
    Nothing is written here; a bad input is an ``InputError``."""
    check_args(args)
    cfg = load_config(args.config, args.set, {k: getattr(args, k) for k in FLAG_KEYS})
    check_replay_fits(args, cfg)
    set_cpu_threads(args.num_threads)
    device = resolve_device(args.device)
    log(f"vqa_trainer: mode {args.mode}, config {cfg['_source']}, order {args.data_order}, seed {args.seed}, "
        f"save_dir {args.save_dir}")
    data = VQAStreamData(args, cfg, device, log)
    if data.boundaries[0] == 0 and cfg["max_epochs"] > 0 and args.mode in ("remind", "finetune"):
        raise TrainerError(f"the base-initialisation chunk is empty (boundaries {data.boundaries}); "
                           f"use more training questions")
    trainer = Trainer(args, cfg, data, device, log)
    resumed = start(trainer, args, log)
    return cfg, trainer, resumed


def main(argv=None):
    args = build_parser().parse_args(argv)
    log = StartupLog()
    cfg, trainer, resumed = prepare(args, log)
    log.open(args.save_dir)
    write_config(args, cfg, resumed)
    if trainer.state.phase == "done":
        log("the run is already complete")
        trainer.write_results(complete=True)
        return 0
    try:
        trainer.run()
    except StopRun:
        log(f"stopped after {trainer.state.global_step} steps (checkpoint saved); continue with --resume")
        return 0
    log(f"done in {trainer.elapsed():.1f} s of run time (all processes of this run; startup not counted); "
        f"results in {os.path.join(args.save_dir, 'results.json')}")
    return 0


if __name__ == "__main__":
    run_cli(main, prog="vqa_trainer")
