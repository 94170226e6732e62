"""Torch operators dispatched by one streaming step, per stage: on a GPU each is at least one kernel
launch, so this is what a launch-bound step (small maps, a fast GPU) pays per sample, and what CUDA
graphs or fusion would remove. Counted on any device with a dispatch mode (forward, backward and the
optimizer's operators alike)."""
import collections
import contextlib

from torch.utils._python_dispatch import TorchDispatchMode


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.stage = "other"
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[self.stage] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def __call__(self, name):  # the step's stage hook (``model.timer``)
        outer, self.stage = self.stage, name
        try:
            yield
        finally:
            self.stage = outer


def count_step_ops(model, fmap, label, item_id):
    """Operators per stage of one ``fit_sample`` (with the encode of ``fmap`` [1, C, H, W]), as
    {stage: count}; the model's own stage hook is restored afterwards."""
    counter, saved = _Counter(), model.timer
    model.timer = counter
    try:
        with counter:
            with counter("encode"):
                codes = model.quantizer.encode_maps(fmap)[0]
            model.fit_sample(codes, label, item_id)
    finally:
        model.timer = saved
    return dict(counter.counts)
