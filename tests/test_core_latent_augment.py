import collections
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from scipy import stats

from remind.latent_augment import mixup_pairs, random_resized_crop, resized_crop, sample_crop_boxes


def reference_crop_box(height, width, scale=(2 / 7, 1.0), ratio=(3 / 4, 4 / 3), rnd=random):
    """Straightforward per-tensor crop parameters, as the reference draws them."""
    area = height * width
    for _ in range(10):
        target_area = rnd.uniform(*scale) * area
        aspect = math.exp(rnd.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if w <= width and h <= height:
            return rnd.randint(0, height - h), rnd.randint(0, width - w), h, w
    return 0, 0, height, width  # square maps: the fallback is the whole map


@pytest.mark.parametrize("size", [7, 4])
def test_crop_parameters_follow_the_reference_distribution(size):
    n = 20000
    g = torch.Generator().manual_seed(0)
    ours = collections.Counter(zip(*(t.tolist() for t in sample_crop_boxes(n, size, size, generator=g))))
    rnd = random.Random(0)
    ref = collections.Counter(reference_crop_box(size, size, rnd=rnd) for _ in range(n))
    keys = [k for k in set(ours) | set(ref) if ours[k] + ref[k] >= 20]
    table = np.array([[ours[k] for k in keys], [ref[k] for k in keys]])
    assert stats.chi2_contingency(table).pvalue > 1e-3
    # Rare boxes (few counts) make up a negligible share in both.
    assert sum(ours.values()) - table[0].sum() < 0.03 * n


def test_batched_crop_equals_per_tensor_interpolate():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 5, 7, 7, generator=g)
    top, left, h, w = sample_crop_boxes(64, 7, 7, generator=g)
    out = resized_crop(x, top, left, h, w)
    for i in range(64):
        t, l, hh, ww = int(top[i]), int(left[i]), int(h[i]), int(w[i])
        ref = nnf.interpolate(x[i:i + 1, :, t:t + hh, l:l + ww], size=(7, 7), mode="bilinear",
                              align_corners=False)[0]
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-5)


def test_full_box_is_identity_and_crops_are_independent_per_tensor():
    x = torch.randn(3, 2, 7, 7)
    full = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), torch.full((3,), 7), torch.full((3,), 7)
    torch.testing.assert_close(resized_crop(x, *full), x)
    same = x[:1].repeat(200, 1, 1, 1)
    out = random_resized_crop(same, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten().tolist()) for o in out.round(decimals=4)}
    assert len(distinct) > 20


def test_mixup_pairs_first_half_with_second_half():
    x = torch.arange(6, dtype=torch.float32).reshape(6, 1)
    y = torch.tensor([10, 11, 12, 13, 14, 15])
    mixed, ya, yb = mixup_pairs(x, y, 0.25)
    torch.testing.assert_close(mixed, 0.25 * x[:3] + 0.75 * x[3:])
    assert ya.tolist() == [10, 11, 12] and yb.tolist() == [13, 14, 15]
    mixed, ya, yb = mixup_pairs(x[:5], y[:5], 0.5)  # odd count: the last one is dropped
    assert mixed.shape[0] == 2 and yb.tolist() == [12, 13]


@pytest.mark.parametrize("crops", [False, True])
def test_augment_replay_batch_never_mixes_the_new_sample(crops):
    from remind.latent_augment import augment_replay_batch

    x = torch.randn(7, 3, 4, 4).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # NHWC view
    y = torch.arange(7)
    out, ya, yb = augment_replay_batch(x, y, None, crops, generator=torch.Generator().manual_seed(0))
    assert out.is_contiguous() and out.shape == x.shape and yb is None and torch.equal(ya, y)
    out, ya, yb = augment_replay_batch(x, y, 0.3, crops, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 4, 4) and ya.tolist() == [0, 1, 2, 3] and yb.tolist() == [0, 4, 5, 6]
    if not crops:
        torch.testing.assert_close(out[0], x[0])
        torch.testing.assert_close(out[1:], 0.3 * x[1:4] + 0.7 * x[4:7])


@pytest.mark.parametrize("lam", [None, 0.3])
@pytest.mark.parametrize("crops", [False, True])
def test_channels_last_output_has_the_same_values_without_a_copy_to_nchw(crops, lam):
    from remind.latent_augment import augment_replay_batch

    x = torch.randn(7, 8, 5, 5).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # as decoded
    y = torch.arange(7)
    outs = [augment_replay_batch(x, y, lam, crops, generator=torch.Generator().manual_seed(1), memory_format=fmt)[0]
            for fmt in (torch.contiguous_format, torch.channels_last)]
    assert outs[0].is_contiguous() and outs[1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(outs[0], outs[1])
