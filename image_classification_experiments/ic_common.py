"""Small helpers shared by the image-classification scripts (no torch import at module level).

- ``run_cli``: bad input becomes one line on stderr and exit status 1, not a traceback.
- ``atomic_output``: every output is written under a temporary name and renamed at the end, so a
  crash or Ctrl-C never leaves a half-written file under the final name.
"""
import contextlib
import json
import os
import sys
import tempfile

from imagenet_folders import DataError

# Error classes of the core whose messages are already one clear line (looked up by name so
# that this module does not import torch).
_CORE_ERRORS = (("remind.checkpoint", "CheckpointError"), ("remind.quantizer", "QuantizerError"),
                ("remind.networks", "NetworkError"))


def _expected_errors():
    classes = [DataError]
    for module, name in _CORE_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None:
            classes.append(cls)
    return tuple(classes)


def run_cli(main, argv=None):
    """Run ``main(argv)``; known input errors -> ``error: <msg>`` on stderr and exit 1."""
    try:
        main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # only the known kinds are shortened; anything else is a bug
        if not isinstance(err, _expected_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside ``path`` (same extension); rename it to ``path`` on success."""
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
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json(path, obj):
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")


def default_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name):
    """A torch.device from ``--device``; asking for CUDA without one is an input error."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DataError(f"--device {name}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DataError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return device


def seed_everything(seed):
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
