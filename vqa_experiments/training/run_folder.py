"""The run folder's bookkeeping: nothing is written before every input has been checked.

- the run's log is ``remind.runtime.StartupLog``: lines are printed at once and kept in memory until ``open``
  creates the folder and ``log.txt`` (so a run that fails on bad input writes nothing).
- ``write_config``: ``config.json``, the settings of the run as it started.
"""
import os

from remind.runtime import write_json
from vqa_experiments.training.config import public_config

# Flags that only steer one process of a run: not part of config.json (a resumed run's is the same).
PER_PROCESS_FLAGS = ("resume", "stop_after_steps", "progress", "num_threads", "checkpoint_interval",
                     "checkpoint_interval_min")


def write_config(args, cfg, resumed):
    """``config.json``: the settings of the run as it started. A resume keeps it (its own
    per-process flags, such as --resume or --stop_after_steps, do not change the run)."""
    path = os.path.join(args.save_dir, "config.json")
    if not (resumed and os.path.exists(path)):
        run_args = {k: v for k, v in vars(args).items() if k not in PER_PROCESS_FLAGS}
        write_json(path, {"config": public_config(cfg), "args": run_args})
