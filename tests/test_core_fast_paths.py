"""The streaming step's fast paths compute what the plain formulations compute."""
import torch
import torch.nn.functional as nnf

import pytest

from remind.latent_augment import (mixup_pairs, random_resized_crop, random_resized_crop_and_mix,
                                   resized_crop, sample_crop_boxes)
from remind.model import REMINDModel, StreamingConfig
from remind.networks import build_resnet18_split
from remind.quantizer import ProductQuantizer
from remind.threads import intra_op_threads
from remind.replay_buffer import ReplayBuffer


def per_tensor_crops(x, top, left, h, w):
    return torch.stack([
        nnf.interpolate(x[i:i + 1, :, t:t + hh, l:l + ww], size=x.shape[2:], mode="bilinear",
                        align_corners=False)[0]
        for i, (t, l, hh, ww) in enumerate(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist()))])


def test_large_maps_match_interpolate():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 9, 9, generator=g)
    boxes = sample_crop_boxes(16, 9, 9, generator=g)
    torch.testing.assert_close(resized_crop(x, *boxes), per_tensor_crops(x, *boxes), rtol=1e-5, atol=1e-5)


def test_crop_of_a_channels_last_view_equals_crop_of_contiguous_maps():
    g = torch.Generator().manual_seed(1)
    nhwc = torch.randn(20, 7, 7, 6, generator=g)
    view = nhwc.permute(0, 3, 1, 2)  # what fit_sample hands to the crop
    boxes = sample_crop_boxes(20, 7, 7, generator=g)
    out = resized_crop(view, *boxes)
    assert out.is_contiguous()
    torch.testing.assert_close(out, resized_crop(view.contiguous(), *boxes), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out, per_tensor_crops(view.contiguous(), *boxes), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,count", [(7, 101), (7, 12), (9, 11), (2, 7)])
def test_fused_crop_and_mix_equals_crop_then_mixup(size, count):
    x = torch.randn(count, 8, size, size, generator=torch.Generator().manual_seed(3))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    crops = random_resized_crop(x, generator=g1)
    mixed, _, _ = mixup_pairs(crops[1:], torch.arange(count - 1), 0.3)
    out = random_resized_crop_and_mix(x, 0.3, keep=1, generator=g2)
    assert out.is_contiguous() and out.shape == (1 + (count - 1) // 2, 8, size, size)
    torch.testing.assert_close(out, torch.cat([crops[:1], mixed]), rtol=1e-5, atol=1e-5)
    assert torch.equal(g1.get_state(), g2.get_state())  # the same random draws


def test_intra_op_threads_restores_the_setting():
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with intra_op_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with intra_op_threads(None):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(prev)


def test_single_threaded_small_stages_give_bit_identical_steps():
    g = torch.Generator().manual_seed(2)
    pq = ProductQuantizer.from_state_dict(
        {"d": 512, "num_codebooks": 32, "nbits": 8, "centroids": torch.rand(32, 256, 16, generator=g)})
    maps = torch.rand(8, 512, 4, 4, generator=g)
    fill = torch.randint(0, 256, (60, 4, 4, 32), dtype=torch.uint8, generator=g)
    fill_labels = torch.randint(0, 5, (60,), generator=g)

    def run(threads):
        torch.manual_seed(0)
        _, f = build_resnet18_split(num_classes=5)
        buf = ReplayBuffer((4, 4, 32), capacity=60, seed=0)
        buf.add_batch(fill, fill_labels, torch.arange(60))
        model = REMINDModel(None, f, pq, buf, 5, StreamingConfig(num_replay=10), seed=0)
        model.small_stage_threads = threads
        codes = pq.encode_maps(maps)
        losses = [float(model.fit_sample(codes[i], i % 5, 100 + i)) for i in range(len(maps))]
        return losses, f.state_dict()

    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (la, sa), (lb, sb) = run(1), run(None)
    finally:
        torch.set_num_threads(prev)
    assert la == lb
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("height,width", [(7, 7), (5, 9)])
def test_fused_crop_and_mix_reads_any_layout_and_matches_interpolate(height, width):
    """Decoded codes arrive as a channels-last view; contiguous maps give the same result, and every
    output map is the mix of two per-tensor F.interpolate crops (non-square maps too)."""
    nhwc = torch.randn(9, height, width, 6, generator=torch.Generator().manual_seed(5))
    view = nhwc.permute(0, 3, 1, 2)
    out = random_resized_crop_and_mix(view, 0.7, keep=1, generator=torch.Generator().manual_seed(6))
    again = random_resized_crop_and_mix(view.contiguous(), 0.7, keep=1, generator=torch.Generator().manual_seed(6))
    assert out.is_contiguous() and torch.equal(out, again)
    boxes = sample_crop_boxes(9, height, width, generator=torch.Generator().manual_seed(6))
    crops = per_tensor_crops(view.contiguous(), *boxes)
    torch.testing.assert_close(out, torch.cat([crops[:1], 0.7 * crops[1:5] + 0.3 * crops[5:9]]), rtol=1e-5, atol=1e-5)
