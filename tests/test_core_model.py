import warnings

import numpy as np
import pytest
import torch

from remind.model import REMINDModel, StreamingConfig
from remind.networks import build_resnet18_split
from remind.quantizer import ProductQuantizer
from remind.replay_buffer import ReplayBuffer

NUM_CLASSES = 4


def synthetic_maps(n_per_class, seed, classes=range(NUM_CLASSES)):
    """Non-negative 512 x 2 x 2 maps: a class prototype plus noise (like post-ReLU features)."""
    protos = np.random.default_rng(1234).gamma(1.0, 1.0, size=(NUM_CLASSES, 512, 2, 2))
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in classes:
        x.append(np.maximum(protos[c] + rng.normal(0, 0.8, size=(n_per_class, 512, 2, 2)), 0))
        y += [c] * n_per_class
    return torch.tensor(np.concatenate(x), dtype=torch.float32), torch.tensor(y)


@pytest.fixture(scope="module")
def quantizer():
    x, _ = synthetic_maps(40, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ProductQuantizer(512, 32, 8).fit(x.permute(0, 2, 3, 1).reshape(-1, 512).numpy(), seed=0)


def make_model(quantizer, seed=0, capacity=None, **cfg):
    torch.manual_seed(seed)
    _, f = build_resnet18_split(first_plastic_block="layer4.1", num_classes=NUM_CLASSES)
    config = StreamingConfig(**{"num_replay": 10, **cfg})
    buf = ReplayBuffer((2, 2, 32), capacity=capacity, seed=seed)
    return REMINDModel(None, f, quantizer, buf, NUM_CLASSES, config, seed=seed)


def stream(model, quantizer, n_per_class=20, seed=1):
    x, y = synthetic_maps(n_per_class, seed)
    codes = quantizer.encode_maps(x)
    losses = []
    model.fit(codes, y, torch.arange(len(y)), on_step=lambda i, loss: losses.append(float(loss)))
    return losses


def test_short_stream_learns_all_classes(quantizer):
    model = make_model(quantizer)
    stream(model, quantizer)
    xt, yt = synthetic_maps(30, seed=99)
    probs = model.predict_codes(quantizer.encode_maps(xt))
    acc = (probs.argmax(1) == yt).float().mean().item()
    assert acc >= 0.8, acc  # chance is 0.25
    # Replay kept the first class alive through three later classes.
    assert (probs.argmax(1)[yt == 0] == 0).float().mean() >= 0.6
    assert len(model.buffer) == 4 * 20 and model.steps == 80


def test_fine_tune_without_replay_forgets(quantizer):
    model = make_model(quantizer, num_replay=0)  # mixup stays on: must not break with 0 replays
    stream(model, quantizer)
    xt, yt = synthetic_maps(30, seed=99)
    pred = model.predict_codes(quantizer.encode_maps(xt)).argmax(1)
    assert (pred[yt == 0] == 0).float().mean() <= 0.2  # class-incremental fine-tuning forgets


def test_seeded_runs_are_bit_for_bit_repeatable(quantizer):
    a, b = make_model(quantizer, seed=3), make_model(quantizer, seed=3)
    la, lb = stream(a, quantizer, 8), stream(b, quantizer, 8)
    assert la == lb
    for (k, va), vb in zip(a.f.state_dict().items(), b.f.state_dict().values()):
        assert torch.equal(va, vb), k
    c = make_model(quantizer, seed=4)
    assert stream(c, quantizer, 8) != la


@pytest.mark.parametrize("options", [{}, {"mixup": False, "latent_crops": False}])
def test_state_dict_round_trip_continues_identically(quantizer, options, tmp_path):
    from remind.checkpoint import load_checkpoint, save_checkpoint

    x, y = synthetic_maps(10, seed=5)
    codes, ids = quantizer.encode_maps(x), torch.arange(len(y))
    full = make_model(quantizer, seed=2, capacity=25, **options)
    full.fit(codes, y, ids)

    first = make_model(quantizer, seed=2, capacity=25, **options)
    first.fit(codes[:17], y[:17], ids[:17])
    save_checkpoint(tmp_path / "state.pt", first.state_dict())
    resumed = make_model(quantizer, seed=11, capacity=25, **options)  # other seed: state must win
    resumed.load_state_dict(load_checkpoint(tmp_path / "state.pt"))
    resumed.fit(codes[17:], y[17:], ids[17:])

    for (k, va), vb in zip(full.f.state_dict().items(), resumed.f.state_dict().values()):
        assert torch.equal(va, vb), k
    assert torch.equal(full.buffer.codes, resumed.buffer.codes)
    assert np.array_equal(full.class_counts, resumed.class_counts)
    assert len(resumed.buffer) == 25  # the cap survives the resume


def test_buffer_cap_and_label_checks(quantizer):
    model = make_model(quantizer, capacity=12)
    stream(model, quantizer, n_per_class=6)
    assert len(model.buffer) == 12
    assert sorted(model.buffer.class_counts()) == [0, 1, 2, 3]  # older classes shrink, none vanishes
    with pytest.raises(ValueError, match="label 9"):
        model.fit_sample(torch.zeros(2, 2, 32, dtype=torch.uint8), 9, 0)


def test_channels_last_runs_the_same_step_in_another_memory_order(quantizer):
    """Same draws, same math: the losses and weights agree to float rounding, and F sees
    channels-last inputs without a copy to NCHW."""
    a, b = make_model(quantizer, seed=5), make_model(quantizer, seed=5, channels_last=True)
    assert b.f.get_parameter("layer4.1.conv1.weight").is_contiguous(memory_format=torch.channels_last)
    seen = []
    b.f.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    la, lb = stream(a, quantizer, 6), stream(b, quantizer, 6)
    assert seen and all(seen)
    np.testing.assert_allclose(la, lb, rtol=1e-3, atol=1e-4)
    for (k, va), vb in zip(a.f.state_dict().items(), b.f.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=1e-3, atol=1e-4, msg=k)
    xt, _ = synthetic_maps(5, seed=99)
    codes = quantizer.encode_maps(xt)
    torch.testing.assert_close(a.predict_codes(codes), b.predict_codes(codes), rtol=1e-3, atol=1e-4)
