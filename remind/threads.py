"""CPU thread control for the small stages of a streaming step."""
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
