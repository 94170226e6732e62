"""Atomic h5/npy outputs, h5 string columns and warnings for the data scripts.

JSON outputs, the one-line-error CLI wrapper and the CPU thread setting come from
``remind.runtime`` (``write_json``, ``run_cli``, ``set_cpu_threads``).
"""
import contextlib
import sys

import h5py
import numpy as np
from remind.checkpoint import atomic_write

STR_DTYPE = h5py.string_dtype("utf-8")


def write_npy(path, array):
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


@contextlib.contextmanager
def atomic_h5(path):
    """An open, writable ``h5py.File`` that appears under ``path`` only if the block succeeds."""
    with atomic_write(path) as tmp:
        with h5py.File(tmp, "w") as f:
            yield f


def put_strings(f, name, values):
    """A utf-8 string dataset (read back as ``str`` by ``vqa_data``)."""
    values = np.asarray(list(values), dtype=object)
    f.create_dataset(name, data=values, dtype=STR_DTYPE)


def set_attrs(f, attrs):
    for key, value in attrs.items():
        f.attrs[key] = value


def warn(message):
    print(f"warning: {message}", file=sys.stderr)

