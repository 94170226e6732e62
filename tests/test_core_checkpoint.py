import os
import pickle

import numpy as np
import pytest
import torch

from remind.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint


def test_round_trip_with_numpy_and_rng_states(tmp_path):
    rng = np.random.Generator(np.random.PCG64(7))
    obj = {"a": torch.arange(3), "b": np.ones((2, 2), dtype=np.uint8), "rng": rng.bit_generator.state,
           "n": np.int64(5), "nested": [{"x": 1.5}, None, "s"]}
    save_checkpoint(tmp_path / "c.pt", obj)
    back = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["b"], torch.ones(2, 2, dtype=torch.uint8)) and back["n"] == 5
    other = np.random.Generator(np.random.PCG64(0))
    other.bit_generator.state = back["rng"]
    assert other.integers(1 << 30) == rng.integers(1 << 30)
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary files left behind


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("crash while writing")
    assert load_checkpoint(path)["v"] == 1
    assert os.listdir(tmp_path) == ["c.pt"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_never_runs_code_and_errors_are_one_line(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(_Evil(), f)
    with pytest.raises(CheckpointError, match="evil.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt")
