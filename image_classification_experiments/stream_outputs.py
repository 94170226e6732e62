"""What an image-classification stream writes at each evaluation point, all atomically.

In ``--save_dir``, for a point named ``<tag>`` / ``<key>`` by the family (ImageNet:
``min_trained_<a>_max_trained_<b>`` / ``<b>``; CORe50: ``samples_seen_<n>`` / ``<n>``): the
reference's accuracies_<tag>.json (every accuracy so far, one list per metric), preds_<tag>.pth
(softmax probabilities of every evaluation image; with a reference label space, ImageNet's, in the
reference's layout, and ours beside it in preds_<tag>_ordered.pt: ``reference_layout``),
remind_model/remind_classifier_F_<key>.pth
(F and its optimizer) and remind_model/remind_state_<key>.pt (the whole run state; --keep_states K
keeps the last K); then the run summary: results.json, results.csv and accuracy_plot.png, the same
bytes after any number of kills and resumes as in an uninterrupted run (no wall time in them).
"""
import math
import os

import torch

from image_classification_experiments.plots import save_accuracy_plot
from image_classification_experiments.stream_eval import fmt
from image_classification_experiments.stream_state import save_point_state
from remind.checkpoint import atomic_write, save_checkpoint
from remind.runtime import write_csv, write_json


def write_outputs(run, model, state, probs, result):
    """Append ``result`` to the history and write the point's files and the run summary."""
    history = state["history"]
    history.append(result)
    tag, key = run.point_files(result)
    acc_lists = {k: [float(r[k]) for r in history if r[k] == r[k]] for k in result if k not in run.point_keys}
    write_json(os.path.join(run.save_dir, f"accuracies_{tag}.json"), acc_lists)
    write_preds(run, tag, probs)
    out = os.path.join(run.save_dir, "remind_model")
    write_f(run, model, os.path.join(out, f"remind_classifier_F_{key}.pth"))
    save_point_state(run, model, state, key)
    write_json(os.path.join(run.save_dir, "results.json"),
               {"expt_name": run.args.expt_name, "evaluations": history,
                "final": history[-1], "buffer_items": len(model.buffer),
                "buffer_bytes": stored_bytes(model.buffer), **run.results_extra})
    write_csv(os.path.join(run.save_dir, "results.csv"), history, header=list(result))
    plot(run, history)


def stored_bytes(buffer):
    """Bytes of the items the buffer holds (each item's codes, label and id): its content, the
    same after a resume. (``ReplayBuffer.nbytes`` counts the allocated capacity, which depends on
    how the buffer grew, so it differs between a run and its resume.)"""
    code_bytes = math.prod(buffer.code_shape) * buffer.code_dtype.itemsize if buffer.code_shape else 0
    return len(buffer) * (code_bytes + 16)


def write_preds(run, tag, preds):
    """preds_<tag>.pth: the family's softmax probabilities as given; with a reference label space
    (``run.label_space``), the reference's array there and ours (probabilities in class order,
    targets, sample indices, class order) in preds_<tag>_ordered.pt."""
    space = getattr(run, "label_space", None)
    files = {".pth": preds} if space is None else space.preds_files(preds)
    for suffix, obj in files.items():
        with atomic_write(os.path.join(run.save_dir, f"preds_{tag}{suffix}")) as tmp:
            with open(tmp, "wb") as f:  # a Python file: a full disk is ENOSPC, and the bytes do not
                torch.save(obj, f)      # depend on the temporary file's name


def write_f(run, model, path):
    """F and its optimizer under our names (``state_dict``, ``optimizer``; fc rows in the stream's
    label order); with a reference label space also under the reference's (``model_state_dict``,
    ``optimizer_state_dict``; alphabetical fc rows) and the class order of our rows."""
    entries = {"state_dict": model.f.state_dict(), "optimizer": model.optimizer.state_dict()}
    space = getattr(run, "label_space", None)
    if space is not None:
        entries.update(space.reference_f(model.f, model.optimizer), class_order=list(space.class_order))
    save_checkpoint(path, entries)


def plot(run, history):
    """accuracy_plot.png: the family's curves (``run.plot.series``) against ``run.plot.x_key``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = run.plot
    x = [r[spec.x_key] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in spec.series:
        ax.plot(x, [r[key] for r in history], marker="o", label=label)
    ax.set_xlabel(spec.x_label)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"REMIND: {run.args.expt_name}")
    save_accuracy_plot(fig, ax, os.path.join(run.save_dir, "accuracy_plot.png"), dpi=120)


def print_table(run, history):
    """The evaluations as a table in the log: the first column a point key, then accuracies (or
    other counts)."""
    (first, first_key), *rest = run.table
    run.log("  ".join([first] + [header for header, _ in rest]))
    for r in history:
        cells = [f"{r[first_key]:{len(first)}d}"] + [_cell(r[k], len(h)) for h, k in rest]
        run.log("  ".join(cells))


def _cell(value, width):
    return f"{value:>{width}d}" if isinstance(value, int) else f"{fmt(value):>{width}}"
