"""Accuracy metrics shared by the experiments: top-k hits and accuracies, and Omega_all."""
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


def omega(accuracies, offline_accuracies):
    """Omega_all (Kemker et al. 2018): mean over evaluation points t of acc_t / acc_offline_t, where
    acc_offline_t is an offline model's accuracy at the same point; 1.0 matches the offline model."""
    a = np.asarray(accuracies, dtype=np.float64)
    b = np.asarray(offline_accuracies, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"omega needs two equally long, non-empty accuracy lists, got {a.shape} and {b.shape}")
    return float(np.mean(a / b))
