"""How the benchmarks measure: wall-clock medians with CUDA synchronised, pinned threads, and
what the machine was (a shared CPU makes timings noisy, so the report says how busy it was)."""
import collections
import contextlib
import os
import platform
import statistics
import time

import numpy as np
import torch


def median(values):
    return statistics.median(values) if values else float("nan")


def device_sync(device):
    """A callable that waits for the device's queued work (a no-op on the CPU)."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def time_median(fn, reps, sync, warmup=2):
    """Median wall time of ``fn()`` over ``reps`` calls, after ``warmup`` unmeasured ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return median(out)


class StageTimer:
    """model.timer: one wall-clock record per stage per call, synchronising CUDA around it."""

    def __init__(self, device):
        self.times = collections.defaultdict(list)
        self._sync = device_sync(device)
        self._name = None
        self._t0 = 0.0

    def __call__(self, name):
        self._name = name
        return self

    def __enter__(self):
        self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.times[self._name].append(time.perf_counter() - self._t0)
        return False

    def clear(self):
        self.times.clear()


def pin_threads(n):
    """torch's and faiss's CPU thread pools to ``n`` for the whole run."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # already set (only possible before any parallel work)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


@contextlib.contextmanager
def faiss_threads(n):
    try:
        import faiss
    except ImportError:
        yield
        return
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(prev)


def machine_info(threads, device):
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "threads": threads, "device": device}
    try:
        import faiss

        info["faiss"] = faiss.__version__
    except ImportError:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0
