"""Atomic, code-free checkpoints.

A crash while writing must never leave a truncated file under the final name, so every write goes
to a temporary file in the same folder, is flushed to disk, and is renamed over the target.
Loading uses ``torch.load(weights_only=True)``: a checkpoint is data, it can never run code.
"""
import contextlib
import os
import tempfile

import numpy as np
import torch
from remind.errors import InputError


class CheckpointError(InputError, RuntimeError):
    """A checkpoint is missing, unreadable or not of the expected kind."""


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path`` (same extension, so writers that go by the name,
    such as numpy or h5py, behave); on success fsync it and rename it to ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make every output private
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _to_safe(obj):
    """numpy arrays and scalars -> tensors / Python scalars, recursively (weights_only-loadable)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_safe(v) for v in obj)
    return obj


def save_checkpoint(path, obj):
    with atomic_write(path) as tmp:
        torch.save(_to_safe(obj), tmp)


def load_checkpoint(path, map_location="cpu"):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a corrupt or foreign file: say which, in one line
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({msg})") from None
