"""Wall time of a run's stages (loading + G, streaming steps, evaluation, checkpoints), summed over
the run and every process of a resumed one.

Stages may nest; each counts its own time only (an evaluation inside a streamed segment is not
also counted as streaming), so the stages add up to the time spent in them. On CUDA the clock
waits for the device at each stage's end (``sync``), so queued work is charged to the stage that
queued it; use stages around batches or segments, never around single steps.
"""
import contextlib
import time


class StageTimes:
    """``with times("steps"): ...`` adds the block's own seconds to ``seconds["steps"]``."""

    def __init__(self, seconds=None, sync=None, clock=time.perf_counter):
        self.seconds = seconds if seconds is not None else {}  # kept by reference (a run state's dict)
        self.sync = sync
        self.clock = clock
        self._inner = [0.0]  # per open stage: seconds of the stages nested in it

    @contextlib.contextmanager
    def __call__(self, name):
        t0 = self.clock()
        self._inner.append(0.0)
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            took = self.clock() - t0
            inner = self._inner.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + took - inner
            self._inner[-1] += took

    def timed(self, name, iterable):
        """Iterate ``iterable``, charging the time of producing each item to ``name``."""
        it = iter(iterable)
        while True:
            with self(name):
                item = next(it, StopIteration)
            if item is StopIteration:
                return
            yield item

    def summary(self):
        """One line: every stage's seconds and share, largest first."""
        total = sum(self.seconds.values())
        parts = [f"{name} {s:.1f} s ({100 * s / total:.0f}%)" if total > 0 else f"{name} {s:.1f} s"
                 for name, s in sorted(self.seconds.items(), key=lambda kv: -kv[1])]
        return f"stage times: {', '.join(parts)}; total {total:.1f} s"


def device_sync(device):
    """The ``sync`` for a stage clock on ``device`` (None on the CPU)."""
    import torch

    device = torch.device(device)
    return torch.cuda.synchronize if device.type == "cuda" else None
