"""The trainer's checkpoints: what defines a run (the fingerprint), and what a checkpoint holds.

Two files, both ``remind.runtime`` run checkpoints (kind, format version, fingerprint):

- ``<save_dir>/checkpoints/latest.pt`` (kind ``vqa_trainer``): model, optimizer, EMA, replay
  buffer, ``TrainerState`` (phase, epoch, permutation, stream position, step count), the
  evaluations so far and every RNG state; ``--resume`` continues from it exactly.
- ``<save_dir>/base_init.pt`` (kind ``vqa_trainer_base_init``, streaming modes): the same right
  after base initialisation, without the buffer; ``--base_init_from`` starts another streaming
  run from it (REMIND and Fine-Tune with the same settings share it).

The fingerprint is an allowlist: the flags below, the whole config and the data sizes and
boundaries. Anything else (paths, device, threads, progress bars, checkpoint intervals, whether
predictions are written) may change on ``--resume``.
"""
import dataclasses
import os

from remind.runtime import (capture_rng, fingerprint, fingerprint_diff, load_run_checkpoint, restore_rng,
                            save_run_checkpoint)
from vqa_experiments.training.config import CONFIG_DEFAULTS, TrainerError

RUN_KIND = "vqa_trainer"
BASE_INIT_KIND = "vqa_trainer_base_init"
CHECKPOINT_PATH = os.path.join("checkpoints", "latest.pt")
LEGACY_CHECKPOINT_NAME = "checkpoint_latest.pt"  # older versions of this trainer
BASE_INIT_NAME = "base_init.pt"

# The flags that define what a run computes (the config and data sizes are added below).
RUN_SETTINGS = ("mode", "data_order", "rehearsal_mode", "max_buffer_size", "buffer_replacement_strategy",
                "use_exponential_averaging", "seed")
# What only replay uses: base initialisation is the same without these.
REPLAY_SETTINGS = ("mode", "rehearsal_mode", "max_buffer_size", "buffer_replacement_strategy")
REPLAY_CONFIG = ("num_rehearsal_samples",)


def run_fingerprint(args, cfg, data, base_init=False):
    """The settings a checkpoint must share with the run that loads it (``base_init``: those that
    define base initialisation only)."""
    flags = [k for k in RUN_SETTINGS if not (base_init and k in REPLAY_SETTINGS)]
    config = [k for k in CONFIG_DEFAULTS if not (base_init and k in REPLAY_CONFIG)]
    return {"args": fingerprint(args, flags), "config": fingerprint(cfg, config),
            "num_train": data.num_train, "num_val": data.num_val, "boundaries": list(data.boundaries)}


def save(trainer, path, kind, with_buffer):
    """Atomically write the trainer's whole state (the buffer only if ``with_buffer``)."""
    base_init = kind == BASE_INIT_KIND
    buffer = trainer.buffer if with_buffer else None
    save_run_checkpoint(path, kind, run_fingerprint(trainer.args, trainer.cfg, trainer.data, base_init), {
        "state": dataclasses.asdict(trainer.state), "evaluations": trainer.evaluations,
        "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
        "ema": None if trainer.ema is None else trainer.ema.net.state_dict(),
        "buffer": None if buffer is None else buffer.state_dict(),
        "rng": {**capture_rng(), "epoch_gen": trainer.epoch_gen.get_state()}})


def load(trainer, path, kind):
    """Load a checkpoint of ``kind`` made with this run's settings (else a ``TrainerError`` that
    names the first differing setting)."""
    ckpt = load_run_checkpoint(path, kind)
    base_init = kind == BASE_INIT_KIND
    diff = fingerprint_diff(ckpt.get("fingerprint"), run_fingerprint(trainer.args, trainer.cfg, trainer.data,
                                                                     base_init))
    if diff is not None:
        what, hint = ("base initialisation made", "use that run's settings") if base_init else \
            ("made", "use another --save_dir or the same settings")
        raise TrainerError(f"{path}: {what} with different settings ({diff}); {hint}")
    return ckpt


def restore(trainer, ckpt, path):
    """Put a loaded checkpoint's weights, buffer (if it has one), evaluations and RNG states into
    the trainer; returns its ``TrainerState`` as a dict."""
    try:
        trainer.model.load_state_dict(ckpt["model"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:  # e.g. a classifier of another answer-table size
        first = str(err).strip().splitlines()
        raise TrainerError(f"{path}: the checkpoint's network does not fit this run's model "
                           f"({first[-1].strip() if first else type(err).__name__})") from None
    if trainer.ema is not None:
        trainer.ema.net.load_state_dict(ckpt["ema"])
    if trainer.buffer is not None and ckpt.get("buffer") is not None:
        trainer.buffer.load_state_dict(ckpt["buffer"])
    trainer.evaluations = list(ckpt["evaluations"])
    restore_rng(ckpt["rng"])
    trainer.epoch_gen.set_state(ckpt["rng"]["epoch_gen"])
    return dict(ckpt["state"])
