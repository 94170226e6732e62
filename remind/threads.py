"""CPU thread control for the small stages of a streaming step.

The thread count of each small stage was picked by measurement (real steps at the paper shape,
1 and 2 threads alternating, on the 2-core development machine shared with other jobs, load 4-9):
one thread won for every stage, by a wide margin in wall time (sample + gather 0.5 vs 22 ms,
decode 8 vs 37 ms, augment 9 vs 69 ms at load 9; single-map encode 0.8 vs 1.0 ms at load 6),
because the second thread is often descheduled; so the step runs sample, decode and augment on
one thread (``StreamingStep(small_stage_threads=1)``) and small encodes take one thread too.
"""
import contextlib

import torch


@contextlib.contextmanager
def intra_op_threads(n, device="cpu"):
    """Run the block with at most ``n`` torch intra-op CPU threads (a no-op for None or CUDA).

    For work of a few milliseconds, threads gain little, and on a shared CPU each parallel region
    can wait a whole scheduler time slice for a descheduled worker thread (measured here: about
    12 ms per region at load 5 on 2 cores). The same kernels run either way, so the results do not
    change. Switching the count is cheap (well under a microsecond).
    """
    prev = torch.get_num_threads()
    if n is None or prev <= n or torch.device(device).type != "cpu":
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
