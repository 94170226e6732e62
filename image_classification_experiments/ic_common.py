"""Small helpers shared by the image-classification scripts (no torch import at module level).

- ``run_cli``: bad input becomes one line on stderr and exit status 1, not a traceback.
- ``atomic_output``: every output is written under a temporary name and renamed at the end, so a
  crash or Ctrl-C never leaves a half-written file under the final name.
"""
import json
import sys

from image_classification_experiments.imagenet_folders import DataError

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


def atomic_output(path):
    """Temporary path beside ``path``, renamed to it when the block succeeds (see remind.checkpoint)."""
    from remind.checkpoint import atomic_write

    return atomic_write(path)


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
