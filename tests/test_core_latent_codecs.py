import numpy as np
import pytest
import torch

from remind.checkpoint import load_checkpoint, save_checkpoint
from remind.latent_codecs import (LatentCodecError, RawLatents, ScalarQuantizer, code_bytes_per_item,
                                  codec_from_state_dict, items_at_equal_memory, load_codec)
from remind.model import REMINDModel, StreamingConfig
from remind.networks import build_resnet18_split
from remind.quantizer import ProductQuantizer, QuantizerError
from remind.replay_buffer import ReplayBuffer

NUM_CLASSES = 3


def synthetic_maps(n_per_class, seed):
    """Non-negative 512 x 2 x 2 maps: a class prototype plus noise (like post-ReLU features)."""
    protos = np.random.default_rng(77).gamma(1.0, 1.0, size=(NUM_CLASSES, 512, 2, 2))
    rng = np.random.default_rng(seed)
    x = [np.maximum(protos[c] + rng.normal(0, 0.8, size=(n_per_class, 512, 2, 2)), 0) for c in range(NUM_CLASSES)]
    y = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    return torch.tensor(np.concatenate(x), dtype=torch.float32), torch.tensor(y)


def fitted(kind, d=512):
    x, _ = synthetic_maps(5, seed=0)
    codec = RawLatents(d) if kind == "raw" else ScalarQuantizer(d)
    return codec.fit(x.permute(0, 2, 3, 1).reshape(-1, d).numpy(), seed=0)


# ------------------------------------------------------------------------------ round trips
def test_raw_round_trip_is_bit_exact(rng):
    x = torch.from_numpy(rng.standard_normal((5, 3, 16)).astype(np.float32))
    x[0, 0, :3] = torch.tensor([float("inf"), -0.0, 1e-42])  # no value is altered, not even these
    raw = RawLatents(16)
    codes = raw.encode(x)
    assert codes.dtype == torch.uint8 and codes.shape == (5, 3, 64) and raw.M == 64
    back = raw.decode(codes)
    assert back.dtype == torch.float32 and torch.equal(back.view(torch.int32), x.view(torch.int32))
    x.add_(1)  # the codes never alias the input
    assert not torch.equal(raw.decode(codes), x)
    # A slice that is not 4-byte aligned still decodes exactly.
    flat = torch.cat([torch.zeros(1, dtype=torch.uint8), codes.reshape(-1)])[1:].reshape(codes.shape)
    assert torch.equal(raw.decode(flat), raw.decode(codes))


def test_scalar_round_trip_error_at_most_half_a_step(rng):
    x = rng.standard_normal((400, 24)).astype(np.float32) * rng.uniform(0.1, 5, 24).astype(np.float32)
    x[:, 5] = 2.5  # a constant channel decodes exactly
    sq = ScalarQuantizer(24).fit(x)
    t = torch.from_numpy(x).reshape(20, 20, 24)
    codes = sq.encode(t)
    assert codes.dtype == torch.uint8 and codes.shape == (20, 20, 24) and sq.M == 24
    rec = sq.decode(codes)
    assert rec.dtype == torch.float32 and rec.shape == t.shape
    step = (x.max(0) - x.min(0)) / 255
    err = (rec - t).abs().reshape(-1, 24).max(0).values.numpy()
    assert np.all(err <= step / 2 * (1 + 1e-5) + 1e-6), (err / np.maximum(step, 1e-12)).max()
    assert torch.all(rec[..., 5] == 2.5)
    assert int(codes.min()) == 0 and int(codes.max()) == 255  # the fitted range uses every level


def test_scalar_clamps_values_outside_the_fitted_range():
    sq = ScalarQuantizer(2).fit(np.array([[0.0, -1.0], [1.0, 1.0]], dtype=np.float32))
    codes = sq.encode(torch.tensor([[5.0, -9.0], [-3.0, 0.0]]))
    assert codes.tolist() == [[255, 0], [0, 128]]  # 127.5 rounds half to even -> 128
    assert torch.allclose(sq.decode(codes), torch.tensor([[1.0, -1.0], [0.0, 1 / 255]]), atol=1e-6)


@pytest.mark.parametrize("kind", ["raw", "scalar"])
def test_maps_shapes_and_memory(kind):
    codec = fitted(kind)
    x, _ = synthetic_maps(2, seed=3)
    codes = codec.encode_maps(x)
    assert codes.shape == (6, 2, 2, codec.M) and codes.dtype == torch.uint8
    maps = codec.decode_maps(codes)
    assert maps.shape == x.shape and maps.dtype == torch.float32 and maps.is_contiguous()
    if kind == "raw":
        assert torch.equal(maps, x)
    assert code_bytes_per_item(codec, 2, 2) == 4 * codec.M
    assert codec.nbytes == (0 if kind == "raw" else 2 * 4 * 512)


def test_items_at_equal_memory():
    # 7x7 maps of 512 channels, 32-byte PQ: raw holds 64x fewer items, 8-bit scalar 16x fewer.
    pq_bytes = 7 * 7 * 32
    assert items_at_equal_memory(959665, pq_bytes, code_bytes_per_item(RawLatents(512), 7, 7)) == 959665 // 64
    assert items_at_equal_memory(1000, pq_bytes, 7 * 7 * 512) == 62  # floor(1000 / 16)
    with pytest.raises(LatentCodecError, match="not one item"):
        items_at_equal_memory(10, pq_bytes, 7 * 7 * 2048)
    with pytest.raises(LatentCodecError, match="positive"):
        items_at_equal_memory(0, pq_bytes, 100)


# ---------------------------------------------------------------------------- state and files
@pytest.mark.parametrize("kind", ["raw", "scalar"])
def test_state_and_npz_round_trip(kind, tmp_path):
    codec = fitted(kind)
    x, _ = synthetic_maps(1, seed=4)
    codes = codec.encode_maps(x)
    again = codec_from_state_dict(codec.state_dict())
    assert type(again) is type(codec) and torch.equal(again.decode_maps(codes), codec.decode_maps(codes))
    path = tmp_path / f"{kind}.npz"
    codec.save(path)
    with np.load(path, allow_pickle=False) as z:  # plain arrays
        assert str(z["kind"]) == kind
    for loaded in (load_codec(path), type(codec).load(path)):
        assert type(loaded) is type(codec) and loaded.M == codec.M
        assert torch.equal(loaded.encode_maps(x), codes)
        assert torch.equal(loaded.decode_maps(codes), codec.decode_maps(codes))
    other = ScalarQuantizer if kind == "raw" else RawLatents
    with pytest.raises(LatentCodecError, match="not a"):
        other.load(path)


def test_pq_states_without_kind_still_load(tmp_path):
    x = np.random.default_rng(0).standard_normal((700, 16)).astype(np.float32)
    pq = ProductQuantizer(16, 4, 4).fit(x, seed=0)
    assert type(codec_from_state_dict(pq.state_dict())) is ProductQuantizer
    pq.save(tmp_path / "pq.npz")
    loaded = load_codec(tmp_path / "pq.npz")
    assert type(loaded) is ProductQuantizer and torch.equal(loaded.centroids, pq.centroids)


def test_errors_are_one_line_quantizer_errors(tmp_path):
    sq = ScalarQuantizer(4)
    with pytest.raises(LatentCodecError, match="not fitted"):
        sq.encode(torch.zeros(4))
    with pytest.raises(QuantizerError, match="bits per value"):
        ScalarQuantizer(4, nbits=9)
    with pytest.raises(LatentCodecError, match="NaN"):
        RawLatents(2).fit(np.array([[0.0, np.nan]]))
    with pytest.raises(LatentCodecError, match="dimension 3"):
        RawLatents(4).encode(torch.zeros(2, 3))
    with pytest.raises(LatentCodecError, match="bytes per vector"):
        RawLatents(4).decode(torch.zeros(2, 4, dtype=torch.uint8))
    with pytest.raises(LatentCodecError, match="unknown codec kind 'zip'"):
        codec_from_state_dict({"kind": "zip", "d": 4})
    with pytest.raises(LatentCodecError, match="lacks the entry 'lo'"):
        codec_from_state_dict({"kind": "scalar", "d": 4, "nbits": 8})
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(LatentCodecError, match="bad.npz: not a readable codec file"):
        load_codec(tmp_path / "bad.npz")


# --------------------------------------------------------------------- the streaming learner
def make_model(codec, seed=0, capacity=None):
    torch.manual_seed(seed)
    _, f = build_resnet18_split(first_plastic_block="layer4.1", num_classes=NUM_CLASSES)
    buf = ReplayBuffer((2, 2, codec.M), capacity=capacity, seed=seed)
    return REMINDModel(None, f, codec, buf, NUM_CLASSES, StreamingConfig(num_replay=4), seed=seed)


@pytest.mark.parametrize("kind", ["raw", "scalar"])
def test_remind_model_streams_and_resumes_exactly_with_each_codec(kind, tmp_path):
    codec = fitted(kind)
    x, y = synthetic_maps(4, seed=5)
    codes, ids = codec.encode_maps(x), torch.arange(len(y))
    full = make_model(codec, seed=2, capacity=8)
    full.fit(codes, y, ids)

    first = make_model(codec, seed=2, capacity=8)
    first.fit(codes[:7], y[:7], ids[:7])
    save_checkpoint(tmp_path / "state.pt", first.state_dict())
    # Another codec with as many bytes per vector, and another seed: the saved state must win.
    stand_in = RawLatents(128) if kind == "scalar" else ScalarQuantizer(2048)
    resumed = make_model(stand_in, seed=9, capacity=8)
    resumed.load_state_dict(load_checkpoint(tmp_path / "state.pt"))
    assert type(resumed.quantizer) is type(codec) and resumed.quantizer.d == 512
    resumed.fit(codes[7:], y[7:], ids[7:])

    for (k, va), vb in zip(full.f.state_dict().items(), resumed.f.state_dict().values()):
        assert torch.equal(va, vb), k
    assert torch.equal(full.buffer.codes, resumed.buffer.codes) and len(resumed.buffer) == 8
    assert torch.equal(full.predict_codes(codes), resumed.predict_codes(codes))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["raw", "scalar"])
def test_codecs_on_cuda_match_the_cpu(kind):
    codec = fitted(kind)
    x, y = synthetic_maps(2, seed=6)
    cpu_codes = codec.encode_maps(x)
    codec.to("cuda")
    codes = codec.encode_maps(x.cuda())
    assert codes.is_cuda and torch.equal(codes.cpu(), cpu_codes)
    assert torch.allclose(codec.decode_maps(codes).cpu(), codec.to("cpu").decode_maps(cpu_codes))
    torch.manual_seed(0)
    _, f = build_resnet18_split(first_plastic_block="layer4.1", num_classes=NUM_CLASSES)
    buf = ReplayBuffer((2, 2, codec.M), capacity=4, device="cuda")
    model = REMINDModel(None, f, codec, buf, NUM_CLASSES, StreamingConfig(num_replay=2), device="cuda")
    model.fit(codes, y, torch.arange(len(y)))
    assert model.buffer.codes.is_cuda and model.predict_codes(codes).shape == (len(y), NUM_CLASSES)
