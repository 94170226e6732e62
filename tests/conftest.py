import os

import pytest
import torch

# Two cores: keep each test process to one intra-op thread for stable, quick runs.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import remind  # noqa: F401  (torchvision compatibility before any test imports it)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
