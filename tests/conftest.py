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


# --------------------------------------------------------------- image classification (IC)
@pytest.fixture(scope="session")
def make_imagenet_tree():
    """Factory of tiny ImageNet-style trees: ``make_imagenet_tree(root, classes, n_train, n_val,
    size, seed) -> root`` with ``root/{train,val}/<wnid>/*.png`` (see tests/ic_fixtures.py)."""
    import ic_fixtures

    return ic_fixtures.make_imagenet_tree


@pytest.fixture(scope="session")
def make_flat_val():
    """Factory: ``make_flat_val(root, tree) -> (root, LOC_val_solution.csv)``, ``tree``'s val images
    in Kaggle's flat layout (see tests/ic_fixtures.py)."""
    import ic_fixtures

    return ic_fixtures.make_flat_val
