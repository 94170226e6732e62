"""VQA accuracy metrics: overall exact match, accuracy per question type, mean-per-type.

``overall`` and ``mean_per_type`` (arithmetic, divided by the dataset's fixed number of types: 5
for CLEVR, 12 for TDIUC, so a type absent from the evaluation set counts as 0) are what the
reference printed. ``harmonic_mean_per_type`` is an extra that the reference did not compute; it is
reported under ``extras``. A ground-truth answer of -1 (not in the train answer table) is always
wrong; question type -1 (unknown type) counts towards ``overall`` only.
"""
import numpy as np


def per_type_accuracy(pred, gt, qtypes, num_types):
    """{type: (correct, total)} for types 0..num_types-1 (and any other non-negative type seen)."""
    pred, gt, qtypes = (np.asarray(a).reshape(-1) for a in (pred, gt, qtypes))
    if not (len(pred) == len(gt) == len(qtypes)):
        raise ValueError(f"predictions ({len(pred)}), answers ({len(gt)}) and types ({len(qtypes)}) differ in length")
    correct = (pred == gt) & (gt >= 0)
    types = sorted(set(range(int(num_types))) | {int(t) for t in np.unique(qtypes) if t >= 0})
    out = {}
    for t in types:
        sel = qtypes == t
        out[t] = (int(correct[sel].sum()), int(sel.sum()))
    return out


def arithmetic_mean_per_type(accs, num_types):
    """Sum of per-type accuracies divided by ``num_types`` (missing types contribute 0)."""
    return float(sum(accs)) / float(num_types) if num_types else 0.0


def harmonic_mean_per_type(accs, num_types):
    """``num_types / sum(1/acc_t)``; 0 if any of the ``num_types`` types has accuracy 0 or is missing."""
    accs = list(accs)
    if not num_types or len(accs) < num_types or any(a <= 0 for a in accs):
        return 0.0
    return float(num_types) / float(sum(1.0 / a for a in accs))


def vqa_accuracy_report(pred, gt, qtypes, num_types, type_names=None):
    """A JSON-ready dict of all metrics for one evaluation."""
    pred, gt, qtypes = (np.asarray(a).reshape(-1) for a in (pred, gt, qtypes))
    table = per_type_accuracy(pred, gt, qtypes, num_types)
    total = len(gt)
    n_correct = int(((pred == gt) & (gt >= 0)).sum())
    per_type = {}
    accs = []
    for t in range(int(num_types)):
        c, n = table[t]
        acc = c / n if n else 0.0
        accs.append(acc)
        name = type_names[t] if type_names is not None and t < len(type_names) else str(t)
        per_type[str(t)] = {"name": name, "accuracy": acc, "correct": c, "count": n}
    extra_types = {str(t): {"accuracy": c / n if n else 0.0, "correct": c, "count": n}
                   for t, (c, n) in table.items() if t >= num_types}
    report = {
        "overall": n_correct / total if total else 0.0,
        "num_questions": total,
        "mean_per_type": arithmetic_mean_per_type(accs, num_types),
        "num_types": int(num_types),
        "per_type": per_type,
        "extras": {
            "note": "not computed by the reference implementation",
            "harmonic_mean_per_type": harmonic_mean_per_type(accs, num_types),
        },
    }
    if extra_types:
        report["extras"]["types_beyond_num_types"] = extra_types
    return report
