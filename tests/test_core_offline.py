import math
from pathlib import Path

import numpy as np
import pytest
import torch

from remind.latent_codecs import RawLatents, ScalarQuantizer
from remind.offline import (OfflineConfig, OfflineError, offline_cache_key, train_epochs, train_offline)

NUM_CLASSES, CHANNELS = 4, 8


def separable_maps(n_per_class, seed):
    """[N, 8, 2, 2] maps: a well separated class prototype plus a little noise."""
    protos = np.random.default_rng(5).normal(0, 1, size=(NUM_CLASSES, CHANNELS, 1, 1)) * 2
    rng = np.random.default_rng(seed)
    x = np.concatenate([protos[c] + rng.normal(0, 0.5, size=(n_per_class, CHANNELS, 2, 2))
                        for c in range(NUM_CLASSES)])
    return torch.tensor(x, dtype=torch.float32), torch.arange(NUM_CLASSES).repeat_interleave(n_per_class)


def small_f(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(CHANNELS, 16, 1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, NUM_CLASSES))


def fitted_codec():
    x, _ = separable_maps(20, seed=0)
    return ScalarQuantizer(CHANNELS).fit(x.permute(0, 2, 3, 1).reshape(-1, CHANNELS))


CONFIG = OfflineConfig(epochs=6, batch_size=16, lr=0.05, schedule="cosine", seed=3)


def accuracy(f, codec, codes, labels):
    with torch.no_grad():
        return (f(codec.decode_maps(codes)).argmax(1) == labels).float().mean().item()


def test_learns_a_tiny_separable_problem_from_codes():
    codec = fitted_codec()
    x, y = separable_maps(30, seed=1)
    seen = []
    f = train_offline(small_f(), codec.encode_maps(x), y, codec, CONFIG,
                      progress=lambda e, total, loss: seen.append((e, total, loss)))
    assert not f.training  # returned ready to evaluate
    xt, yt = separable_maps(25, seed=2)
    assert accuracy(f, codec, codec.encode_maps(xt), yt) >= 0.9  # chance is 0.25
    assert [e for e, _, _ in seen] == list(range(1, 7)) and all(t == 6 for _, t, _ in seen)
    assert seen[-1][2] < seen[0][2]


def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not():
    codec = RawLatents(CHANNELS)
    x, y = separable_maps(10, seed=1)
    codes = codec.encode_maps(x)
    a = train_offline(small_f(), codes, y, codec, CONFIG)
    b = train_offline(small_f(), codes, y, codec, CONFIG)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    c = train_offline(small_f(), codes, y, codec, OfflineConfig(**{**vars(CONFIG), "seed": 4}))
    assert not torch.equal(a[0].weight, c[0].weight)


def test_train_epochs_takes_any_inputs_and_the_schedules():
    x, y = separable_maps(5, seed=1)
    f = train_epochs(small_f(), lambda idx: x[idx], y, OfflineConfig(epochs=2, batch_size=8))
    assert not f.training
    step = OfflineConfig(epochs=40, lr=0.1, lr_step_size=15, lr_gamma=0.1)
    assert [step.lr_at(e, 0, 10) for e in (0, 14, 15, 30)] == [0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1 ** 2]
    cos = OfflineConfig(epochs=2, lr=0.2, schedule="cosine")
    assert cos.lr_at(0, 0, 5) == 0.2 and math.isclose(cos.lr_at(1, 0, 5), 0.1)
    assert math.isclose(cos.lr_at(1, 4, 5), 0.1 * (1 + math.cos(math.pi * 9 / 10)))


def test_bad_settings_are_one_line_errors():
    with pytest.raises(OfflineError, match="schedule"):
        OfflineConfig(schedule="linear")
    with pytest.raises(OfflineError, match="epochs"):
        OfflineConfig(epochs=0)
    codec = RawLatents(CHANNELS)
    with pytest.raises(OfflineError, match="3 items of codes but 2 labels"):
        train_offline(small_f(), torch.zeros(3, 2, 2, 32, dtype=torch.uint8), [0, 1], codec)
    with pytest.raises(OfflineError, match="at least one item"):
        train_epochs(small_f(), lambda idx: None, torch.zeros(0))


SETTINGS = {"data": "/data/core50", "order": "class_iid", "classes": [0, 1, 2], "eval_point": 3,
            "epochs": 40, "seed": 0, "config": OfflineConfig()}


def test_cache_key_is_stable_and_sensitive_to_every_setting():
    key = offline_cache_key(SETTINGS)
    assert key == offline_cache_key(dict(reversed(list(SETTINGS.items()))))  # order does not matter
    assert key == offline_cache_key({**SETTINGS, "classes": (0, 1, 2), "data": Path("/data/core50")})
    assert len(key) == 20 and int(key, 16) >= 0
    changed = {"data": "/data/other", "order": "iid", "classes": [0, 1, 3], "eval_point": 4, "epochs": 41,
               "seed": np.int64(1), "config": OfflineConfig(schedule="cosine")}
    keys = {offline_cache_key({**SETTINGS, name: value}) for name, value in changed.items()}
    assert len(keys) == len(changed) and key not in keys
    assert offline_cache_key({**SETTINGS, "extra": None}) != key
    assert offline_cache_key({"a": {"b": 1}}) != offline_cache_key({"a": {"b": 2}})  # nested values count
    # Pinned: the key is the same in every process and release (a changed key loses the cache;
    # change it only with OFFLINE_CACHE_VERSION).
    assert offline_cache_key({"a": 1, "b": [1.5, "x"]}) == "1e28017d4663470c9da8"


def test_cache_key_refuses_values_without_a_plain_form():
    with pytest.raises(OfflineError, match="settings.weights: a Tensor"):
        offline_cache_key({"weights": torch.zeros(2)})
    with pytest.raises(OfflineError, match="keys must be strings"):
        offline_cache_key({"a": {1: 2}})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda_from_host_codes():
    codec = fitted_codec()
    x, y = separable_maps(30, seed=1)
    f = train_offline(small_f(), codec.encode_maps(x), y, codec, CONFIG, device="cuda")
    assert next(f.parameters()).is_cuda
    xt, yt = separable_maps(25, seed=2)
    assert accuracy(f, codec, codec.encode_maps(xt.cuda()), yt.cuda()) >= 0.9
