"""A streaming step keeps everything it touches on the model's device and reads nothing back.

Each test takes the device as a parameter: the CPU always, CUDA when a GPU is present. On CUDA the
step runs under ``torch.cuda.set_sync_debug_mode("error")``, which raises on any synchronising call;
on the CPU a dispatch mode records the operations that would synchronise on CUDA (scalar reads such
as ``.item()`` / ``int(t)``, and ops whose output size depends on the data) and the methods that copy
a tensor to host memory.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from remind.model import REMINDModel, StreamingConfig
from remind.networks import build_resnet18_split
from remind.quantizer import ProductQuantizer
from remind.replay_buffer import ReplayBuffer

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device"))]
CAPACITY, CLASSES = 400, 5


def build_model(device, num_replay=10, channels_last=False):
    """A full buffer (every add evicts), PQ codes of 4 x 4 maps, F = ResNet-18 layer4.1 head."""
    g = torch.Generator().manual_seed(0)
    pq = ProductQuantizer.from_state_dict(
        {"d": 512, "num_codebooks": 32, "nbits": 8, "centroids": torch.rand(32, 256, 16, generator=g)},
        device=device)
    buf = ReplayBuffer((4, 4, 32), capacity=CAPACITY, device=device, seed=0)
    buf.add_batch(torch.randint(0, 256, (CAPACITY, 4, 4, 32), dtype=torch.uint8, generator=g),
                  torch.randint(0, CLASSES, (CAPACITY,), generator=g), torch.arange(CAPACITY))
    torch.manual_seed(0)
    _, f = build_resnet18_split(num_classes=CLASSES)
    config = StreamingConfig(num_replay=num_replay, channels_last=channels_last)
    model = REMINDModel(None, f, pq, buf, CLASSES, config, device=device, seed=0)
    codes = pq.encode_maps(torch.rand(6, 512, 4, 4, generator=g).to(device))
    return model, codes


def on(device, *tensors):
    return all(t.device.type == torch.device(device).type for t in tensors)


@pytest.mark.parametrize("device", DEVICES)
def test_step_state_lives_on_the_device(device):
    model, codes = build_model(device)
    pq, buf = model.quantizer, model.buffer
    assert on(device, pq.centroids, pq._sq_norms, pq._row_offsets, buf.codes, buf.labels, codes)
    assert on(device, *model.f.parameters())
    assert model._aug_gen.device.type == buf._device_gen.device.type == torch.device(device).type
    # The host keeps only the bookkeeping the eviction rule reads: item ids and class lists.
    assert buf.item_ids.device.type == "cpu"
    slots = buf.sample(20)
    assert on(device, slots, pq.decode(codes), pq.encode_maps(pq.decode_maps(codes)))
    loss = model.fit_sample(codes[0], 1, 10_000)
    assert on(device, loss)
    for group in model.optimizer.state.values():
        assert on(device, *(v for v in group.values() if torch.is_tensor(v)))


class SyncRecorder(TorchDispatchMode):
    """Records ops that synchronise a CUDA stream with the host; reads of ``host_ok`` storage (the
    buffer's host-side item ids) are allowed."""

    SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "repeat_interleave")

    def __init__(self, host_ok):
        super().__init__()
        self.host_ok = host_ok
        self.hits = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if any(s in name for s in self.SYNC_OPS):
            t = args[0] if args and torch.is_tensor(args[0]) else None
            if t is None or t.untyped_storage().data_ptr() != self.host_ok:
                self.hits.append(name)
        elif name.startswith("aten::index.") and any(
                torch.is_tensor(i) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ())):
            self.hits.append(name + " (boolean mask)")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_step_reads_nothing_back_from_the_device(device, channels_last, monkeypatch):
    model, codes = build_model(device, channels_last=channels_last)
    model.fit_sample(codes[0], 0, 10_000)  # warm-up: lazy initialisation may synchronise once
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for i in range(1, 5):
                model.fit_sample(codes[i], i % CLASSES, 10_000 + i)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        return
    copies = []
    for method in ("cpu", "numpy", "tolist"):
        original = getattr(torch.Tensor, method)

        def recording(self, *args, _name=method, _original=original, **kwargs):
            copies.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, recording)
    recorder = SyncRecorder(model.buffer.item_ids.untyped_storage().data_ptr())
    with recorder:
        for i in range(1, 5):
            model.fit_sample(codes[i], i % CLASSES, 10_000 + i)
    assert recorder.hits == [] and copies == [], (recorder.hits, copies)
    assert model.steps == 5


def test_recorder_sees_a_scalar_read():
    """The CPU check is not vacuous: ``int(t)`` / ``.item()`` on a tensor are recorded."""
    x = torch.arange(4)
    with SyncRecorder(host_ok=None) as recorder:
        int(x.sum())
        x[x > 1]
    assert recorder.hits and recorder.hits[0].startswith("aten::_local_scalar_dense")
