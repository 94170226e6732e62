"""Per-class learning rate, as a closed-form function of how many samples of the class were seen.

The reference kept one StepLR per class on a shared optimizer; from PyTorch 1.4 on those chain
instead of restarting, and the lr never resets for a new class. A pure function of the per-class
count cannot drift and makes resume trivial: the counts are the whole state.
"""
import math


def per_class_gamma(start_lr=0.1, end_lr=0.001, lr_step_size=100, samples_per_class=1300):
    """The decay factor that takes start_lr to end_lr over samples_per_class samples."""
    if start_lr <= 0 or end_lr <= 0:
        raise ValueError(f"start_lr and end_lr must be positive, got {start_lr} and {end_lr}")
    if lr_step_size <= 0 or samples_per_class <= 0:
        raise ValueError("lr_step_size and samples_per_class must be positive")
    return math.exp(lr_step_size * math.log(end_lr / start_lr) / samples_per_class)


def per_class_lr(n_seen, start_lr=0.1, end_lr=0.001, lr_step_size=100, samples_per_class=1300):
    """lr for the next sample of a class of which n_seen samples were already streamed.

    n_seen = 0 (the first sample of a new class) gives start_lr.
    """
    gamma = per_class_gamma(start_lr, end_lr, lr_step_size, samples_per_class)
    return start_lr * gamma ** (int(n_seen) // int(lr_step_size))
