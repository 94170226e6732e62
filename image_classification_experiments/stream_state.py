"""The run state of an image-classification stream: save, load, resume, and when to checkpoint.

A state is a run checkpoint (``remind.runtime``) of the family's kind holding the model (F,
optimizer, buffer, quantizer, per-class counts, its own generators), the evaluations so far
(``history``), the position in the stream and every global generator, with the fingerprint of
the run-defining settings; a resume with other values of those is refused. The position is
``chunk_start`` (the start key of the segment to stream next: ImageNet's first class of the
chunk, CORe50's stream position) and ``offset`` (items of that segment already streamed).
``run_seconds`` is the streaming time of every process of the run up to the save (so the final
"streaming took" line covers a resumed run whole; it is in the log only, never in a results file),
``stage_seconds`` the same time by stage (``remind.stage_times``).
States of the previous ImageNet version (no format: the settings under "config", torch's
generator only) are still read.

Per-point states (``remind_model/remind_state_<key>.pt``) are the reference's files, one per
evaluation point; ``--keep_states K`` keeps only the last K of them (``prune_point_states``).
"""
import contextlib
import os
import time

import torch

from remind.checkpoint import CheckpointError, load_checkpoint
from remind.errors import InputError
from remind.runtime import capture_rng, load_run_checkpoint, restore_rng, save_run_checkpoint

LATEST = os.path.join("checkpoints", "latest.pt")
KEEP_STATES_HELP = ("keep only the last K per-point states remind_model/remind_state_<point>.pt (default: all, "
                    "as the reference; 0: none). F files are always kept. --resume needs none of them "
                    "(it uses checkpoints/latest.pt), but --resume_full_path DIR needs DIR's state of the "
                    "point it restarts from")


def add_state_arguments(p):
    """``--keep_states K``: the disk a stream's per-point states take (see ``KEEP_STATES_HELP``)."""
    p.add_argument("--keep_states", type=int, default=None, metavar="K", help=KEEP_STATES_HELP)


def point_state_path(save_dir, key):
    return os.path.join(save_dir, "remind_model", f"remind_state_{key}.pt")


def run_time(state):
    """Seconds streamed by every process of the run so far (``since``: this process's start)."""
    since = state.get("since")
    return state.get("run_seconds", 0.0) + (time.time() - since if since is not None else 0.0)


def save_state(path, run, model, state, keep=2):
    """The whole run state as a run checkpoint (``keep`` newest versions)."""
    save_run_checkpoint(path, run.kind, run.run_fingerprint, {
        "model": model.state_dict(), "history": state["history"], "chunk_start": state["chunk_start"],
        "offset": state["offset"], "rng": capture_rng(), "run_seconds": run_time(state),
        "stage_seconds": dict(state.get("stage_seconds", {}))}, keep=keep)


def save_point_state(run, model, state, key):
    """The point's ``remind_state_<key>.pt`` (unless --keep_states 0), then the older ones
    beyond the last --keep_states removed: at most K + 1 exist at any moment."""
    keep = getattr(run.args, "keep_states", None)
    if keep != 0:
        save_state(point_state_path(run.save_dir, key), run, model, state, keep=1)
    if keep is not None:
        prune_point_states(run, state["history"], keep)


def prune_point_states(run, history, keep):
    """Remove the per-point states of every point in ``history`` but the last ``keep``."""
    keys = [run.point_files(r)[1] for r in history]
    for key in keys[:max(len(keys) - keep, 0)]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(point_state_path(run.save_dir, key))


def save_latest(run, model, state):
    save_state(os.path.join(run.save_dir, LATEST), run, model, state)


def check_same_run(saved, current, path):
    """Refuse a state made with other run-defining settings (``saved``: their values)."""
    for k in current:
        if k in saved and saved[k] != current[k]:
            raise InputError(f"{path}: saved with --{k} {saved[k]}, now {current[k]}; "
                             "use the original settings or another --save_dir")


def load_state(path, run, model):
    """Restore ``model`` and the generators from a saved state; returns the run's progress."""
    try:
        saved = load_run_checkpoint(path, run.kind, map_location=model.device)
        check_same_run(saved["fingerprint"], run.run_fingerprint, path)
    except CheckpointError as err:
        saved = previous_layout(path, model, err)
        check_same_run(saved["config"], run.run_fingerprint, path)
    model.load_state_dict(saved["model"])
    if "rng" in saved:
        restore_rng(saved["rng"])
    else:
        torch.set_rng_state(saved["torch_rng"])
    return {"history": list(saved["history"]), "chunk_start": int(saved["chunk_start"]),
            "offset": int(saved["offset"]), "run_seconds": float(saved.get("run_seconds", 0.0)),
            "stage_seconds": dict(saved.get("stage_seconds", {}))}


def previous_layout(path, model, err):
    """A state of the previous ImageNet version at ``path``, else ``err`` (the run checkpoint's
    error, which names every version refused)."""
    try:
        saved = load_checkpoint(path, map_location=model.device)
    except CheckpointError:
        raise err from None
    if not isinstance(saved, dict) or "format" in saved or "config" not in saved:
        raise err
    return saved


def resume_latest(run, model):
    """The state in checkpoints/latest.pt when --resume asks for it and it exists, else None."""
    latest = os.path.join(run.save_dir, LATEST)
    if run.args.resume and os.path.isfile(latest):
        state = load_state(latest, run, model)
        run.log(f"resumed from {latest}: segment {state['chunk_start']}, {state['offset']} samples into it, "
                f"{model.steps} streamed so far")
        return state
    if run.args.resume:
        run.log(f"--resume: no checkpoint in {latest}; starting a new run")
    return None


def fresh_state(run):
    """The state right after base initialisation: nothing evaluated, the first segment next."""
    start = run.segments[0].start if run.segments else run.end
    return {"history": [], "chunk_start": start, "offset": 0, "run_seconds": 0.0, "stage_seconds": {}}


class CheckpointClock:
    """When to save checkpoints/latest.pt inside a segment: every --checkpoint_interval steps, after
    --checkpoint_interval_min minutes since the last save, and at --stop_after_steps (then stop).
    ``run``: anything with those three settings (and what ``save_latest`` needs); ``stages``: a
    ``StageTimes`` the saves are charged to, or None."""

    def __init__(self, run, now=time.monotonic, stages=None):
        self.run, self.now, self.stages = run, now, stages
        self.last_save = now()

    def after_step(self, model, state):
        """Save when due; True when the run should stop now."""
        run, steps = self.run, model.steps
        stop = run.stop_after_steps is not None and steps >= run.stop_after_steps
        due = bool(run.checkpoint_interval) and steps % run.checkpoint_interval == 0
        due = due or (run.checkpoint_interval_min > 0
                      and self.now() - self.last_save >= 60 * run.checkpoint_interval_min)
        if stop or due:
            with self.stages("outputs and checkpoints") if self.stages else contextlib.nullcontext():
                save_latest(run, model, state)
            self.last_save = self.now()
        return stop
