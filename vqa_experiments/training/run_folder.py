"""The run folder's bookkeeping: nothing is written before every input has been checked.

- ``StartupLog``: the run's log; lines are printed at once and kept in memory until ``open``
  creates the folder and ``log.txt`` (so a run that fails on bad input writes nothing).
- ``write_config``: ``config.json``, the settings of the run as it started.
"""
import os
import sys

from remind.runtime import RunLog, write_json
from vqa_experiments.training.config import public_config

# Flags that only steer one process of a run: not part of config.json (a resumed run's is the same).
PER_PROCESS_FLAGS = ("resume", "stop_after_steps", "progress", "num_threads", "checkpoint_interval",
                     "checkpoint_interval_min")


class StartupLog:
    """The run's log before its folder may be written: lines are printed at once and kept, and
    go to ``<save_dir>/log.txt`` only once every input has been checked (``open``), so a run
    that fails on bad input writes nothing."""

    def __init__(self):
        self.lines, self.run_log = [], None

    def __call__(self, msg):
        if self.run_log is not None:
            self.run_log(msg)
            return
        from tqdm import tqdm

        tqdm.write(msg)
        sys.stdout.flush()
        self.lines.append(msg)

    def open(self, save_dir):
        os.makedirs(save_dir, exist_ok=True)
        self.run_log = RunLog(save_dir)
        with open(self.run_log.path, "a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in self.lines)
        self.lines = []


def write_config(args, cfg, resumed):
    """``config.json``: the settings of the run as it started. A resume keeps it (its own
    per-process flags, such as --resume or --stop_after_steps, do not change the run)."""
    path = os.path.join(args.save_dir, "config.json")
    if not (resumed and os.path.exists(path)):
        run_args = {k: v for k, v in vars(args).items() if k not in PER_PROCESS_FLAGS}
        write_json(path, {"config": public_config(cfg), "args": run_args})
