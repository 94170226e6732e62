"""Accuracy metrics shared by the experiments."""
import numpy as np
import torch


def topk_correct(scores, targets, ks=(1, 5)):
    """Per-sample hit flags {k: bool tensor [N]}: is the target among the k highest scores?"""
    scores, targets = torch.as_tensor(scores), torch.as_tensor(targets).long().reshape(-1)
    maxk = min(max(ks), scores.shape[1])
    top = scores.topk(maxk, dim=1).indices  # [N, maxk]
    hits = top.eq(targets.unsqueeze(1))
    return {k: hits[:, :min(k, maxk)].any(dim=1) for k in ks}


def topk_accuracy(scores, targets, ks=(1, 5)):
    """Top-k accuracies in percent; an empty set gives NaN."""
    n = len(targets)
    flags = topk_correct(scores, targets, ks) if n else {k: torch.zeros(0, dtype=torch.bool) for k in ks}
    return {k: (100.0 * flags[k].float().mean().item()) if n else float("nan") for k in ks}


def accuracy_by_group(correct, groups):
    """Mean of ``correct`` (0/1 or scores in [0, 1]) per group value -> {group: accuracy}."""
    correct = np.asarray(correct, dtype=np.float64)
    groups = np.asarray(groups)
    return {g.item() if hasattr(g, "item") else g: float(correct[groups == g].mean())
            for g in np.unique(groups)}


def arithmetic_mean(values):
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def harmonic_mean(values):
    """Harmonic mean; 0 when any value is 0 (the limit), NaN for no values."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return float("nan")
    if (values <= 0).any():
        return 0.0
    return float(values.size / np.sum(1.0 / values))


def omega(accuracies, offline_accuracies):
    """Omega_all: mean over evaluation points of acc_t / acc_offline_t."""
    a = np.asarray(accuracies, dtype=np.float64)
    b = np.asarray(offline_accuracies, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"omega needs two equally long, non-empty accuracy lists, got {a.shape} and {b.shape}")
    return float(np.mean(a / b))
