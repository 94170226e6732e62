"""The benchmark's whole-class comparison on tiny sizes: both map sizes get a row, and the reference
step it times really trains F and keeps the reference's bookkeeping consistent."""
import numpy as np
import torch

from benchmarks.class_stream import compare_class_stream
from benchmarks.reference_stream import ReferenceStep
from benchmarks.step_shape import IMAGENET_STREAM_SAMPLES, fill_buffer, make_quantizer
from remind.networks import build_resnet18_split


def test_class_stream_has_a_row_per_map_size_and_a_projection():
    res = compare_class_stream({2: 2, 7: 1}, 300, seed=0, device="cpu", warmup=1)
    assert [r["map"] for r in res["rows"]] == [2, 7]
    for r in res["rows"]:
        assert r["buffer"] == 300 and r["samples"] >= 1
        assert r["ours_sps"] > 0 and r["ref_sps"] > 0 and r["ours_s"] > 0 and r["ref_s"] > 0
        assert r["ratio"] == r["ours_sps"] / r["ref_sps"]
    pr = res["projection"]
    assert pr["samples"] == IMAGENET_STREAM_SAMPLES and pr["map"] == 7
    assert pr["ours_h"] > 0 and pr["ref_h"] > 0


def test_reference_step_trains_f_and_keeps_its_bookkeeping():
    size, map_size = 300, 2
    torch.manual_seed(0)
    _, f = build_resnet18_split(checkpoint=None, first_plastic_block="layer4.1", num_classes=1000)
    before = [p.detach().clone() for p in f.parameters()]
    buf = fill_buffer(size, "cpu", seed=1, map_size=map_size)
    step = ReferenceStep(f, make_quantizer("cpu", 0), buf, "cpu", seed=0)
    maps = torch.rand(4, 512, map_size, map_size, generator=torch.Generator().manual_seed(2))
    for i in range(4):
        loss = step(maps[i:i + 1], 5, size + i)
        assert np.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, f.parameters()))
    book = step.book
    ids = set(book.ids)
    assert len(book.ids) == len(ids) == size  # every add evicted one item
    assert set(book.store) == ids
    assert set().union(*map(set, book.class_lists.values())) == ids
    assert sum(len(v) for v in book.class_lists.values()) == size
    for v in ids & set(range(size, size + 4)):  # the new items that stayed hold their codes and label
        codes, label = book.store[v]
        assert codes.shape == (map_size, map_size, 32) and codes.dtype == np.uint8 and int(label[0]) == 5
    assert step.class_counts == {5: 4}
