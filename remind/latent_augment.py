"""Augmentation of reconstructed feature maps, for a whole replay batch at once.

``random_resized_crop`` draws the reference's crop parameters (scale and log-uniform aspect ratio,
10 tries, then the center-crop fallback) for every tensor of the batch in one go. "Crop, then
bilinear resize back with align_corners=False" reads two source points per axis, so every output
position is a weighted sum of four source positions (their weights: the products of the two axes'
bilinear weights). With the maps in channels-last order each position is one contiguous row of C
values, and the whole batch of crops is a single ``embedding_bag`` (weighted sums of rows) over
those rows: about 4 multiply-adds per output value, where a dense [HW, HW] crop matrix per map
costs HW. Mixup folds into the same weights (lam on one crop's taps, 1 - lam on the other's), so
crops and mixing are one pass. That equals ``F.interpolate`` on each crop, then mixing, up to float
rounding, with no Python loop over tensors.
"""
import functools
import math

import torch
import torch.nn.functional as nnf


def sample_crop_boxes(n, height, width, scale=(2 / 7, 1.0), ratio=(3 / 4, 4 / 3), attempts=10,
                      generator=None, device="cpu"):
    """Crop boxes (top, left, h, w) as int64 tensors [n], distributed like the reference's."""
    area = height * width
    u = torch.rand(n, attempts, 3, generator=generator, device=device, dtype=torch.float64)
    target_area = (scale[0] + u[..., 0] * (scale[1] - scale[0])) * area
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + u[..., 1] * (log_hi - log_lo))
    w = torch.round(torch.sqrt(target_area * aspect)).long()
    h = torch.round(torch.sqrt(target_area / aspect)).long()
    valid = (w <= width) & (h <= height) & (w > 0) & (h > 0)
    # The first valid attempt of each row (argmax of a bool picks the first True).
    first = valid.long().argmax(dim=1)
    any_valid = valid.any(dim=1)
    rows = torch.arange(n, device=device)
    h_pick, w_pick = h[rows, first], w[rows, first]

    # Center-crop fallback when all attempts fail (as the reference: whole map unless its
    # aspect ratio is outside the allowed range).
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(width / min(ratio))
    elif in_ratio > max(ratio):
        fh, fw = height, int(height * max(ratio))
    else:
        fw, fh = width, height
    h_pick = torch.where(any_valid, h_pick, torch.full_like(h_pick, fh))
    w_pick = torch.where(any_valid, w_pick, torch.full_like(w_pick, fw))

    # Uniform integer offsets in [0, size - crop], one draw per row from the same attempt's u.
    off = torch.rand(n, 2, generator=generator, device=device, dtype=torch.float64)
    top = torch.floor(off[:, 0] * (height - h_pick + 1)).long().clamp_max(height - h_pick)
    left = torch.floor(off[:, 1] * (width - w_pick + 1)).long().clamp_max(width - w_pick)
    top = torch.where(any_valid, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(any_valid, left, torch.full_like(left, (width - fw) // 2))
    return top, left, h_pick, w_pick


def _axis_taps(start, length, size):
    """Bilinear (align_corners=False) resize of [start, start + length) back to ``size`` points.

    Returns the two source indices of every output point (absolute, int64 [n, size, 2]) and their
    weights (float64 [n, size, 2]); at the last source point the second tap repeats the first with
    weight 0.
    """
    length_f = length.to(torch.float64).unsqueeze(1)
    o = torch.arange(size, device=start.device, dtype=torch.float64).unsqueeze(0)
    src = ((o + 0.5) * (length_f / size) - 0.5).clamp_min(0.0)
    i0 = torch.minimum(src.floor().long(), (length - 1).unsqueeze(1))
    has_next = i0 < (length - 1).unsqueeze(1)
    frac = torch.where(has_next, src - i0.to(torch.float64), torch.zeros_like(src))
    first = start.unsqueeze(1) + i0
    return torch.stack([first, first + has_next.long()], -1), torch.stack([1.0 - frac, frac], -1)


@functools.lru_cache(maxsize=16)
def _axis_tap_table(size, device):
    """_axis_taps of every (start, length) on an axis of ``size``, indexed by start * size +
    length - 1: a crop then looks its taps up (one gather) instead of recomputing them."""
    start = torch.arange(size, device=device).view(size, 1).expand(size, size).reshape(-1)
    length = torch.arange(1, size + 1, device=device).repeat(size)
    return _axis_taps(start, length, size)


def _crop_taps(top, left, h, w, height, width):
    """The four source taps of every output position of every map: rows [n, H*W, 4] as indices
    into the batch's [n * H * W] positions (map-major, row-major within a map) and float64 weights."""
    n, device = top.shape[0], top.device
    y_idx, y_w = _axis_tap_table(height, device)
    x_idx, x_w = _axis_tap_table(width, device)
    ky, kx = top * height + (h - 1), left * width + (w - 1)
    ys, wy = y_idx.index_select(0, ky), y_w.index_select(0, ky)  # [n, H, 2]
    xs, wx = x_idx.index_select(0, kx), x_w.index_select(0, kx)  # [n, W, 2]
    base = (torch.arange(n, device=device) * (height * width)).view(n, 1, 1, 1, 1)
    rows = base + ys[:, :, None, :, None] * width + xs[:, None, :, None, :]  # [n, H, W, 2, 2]
    weights = wy[:, :, None, :, None] * wx[:, None, :, None, :]
    return rows.reshape(n, height * width, 4), weights.reshape(n, height * width, 4)


def _weighted_rows(x, rows, weights, n_out, memory_format=torch.contiguous_format):
    """[n_out, C, H, W] whose position b (map-major) is sum_t weights[b, t] * x at position
    rows[b, t], for x [n, C, H, W] in any layout (a channels-last one is read in place).

    The sums come out channels-last (one row of C per position): ``torch.channels_last`` returns
    them as they are, ``torch.contiguous_format`` copies them to NCHW."""
    n, c, height, width = x.shape
    table = x.permute(0, 2, 3, 1).reshape(n * height * width, c)  # rows of C; a view if channels-last
    out = nnf.embedding_bag(rows, table, mode="sum", per_sample_weights=weights.to(x.dtype))
    return out.view(n_out, height, width, c).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


def resized_crop(x, top, left, h, w, memory_format=torch.contiguous_format):
    """Crop each map of x [n, C, H, W] to its box and resize it back to H x W (bilinear).

    x may be any strided view; channels-last maps (e.g. decoded codes viewed as NCHW) are read
    without a copy. The result is contiguous in ``memory_format``.
    """
    n, _, height, width = x.shape
    rows, weights = _crop_taps(top, left, h, w, height, width)
    return _weighted_rows(x, rows.view(-1, 4), weights.view(-1, 4), n, memory_format)


def random_resized_crop(x, scale=(2 / 7, 1.0), ratio=(3 / 4, 4 / 3), generator=None,
                        memory_format=torch.contiguous_format):
    """Independent random resized crop of every feature map in x [n, C, H, W]."""
    top, left, h, w = sample_crop_boxes(x.shape[0], x.shape[2], x.shape[3], scale, ratio,
                                        generator=generator, device=x.device)
    return resized_crop(x, top, left, h, w, memory_format)


def random_resized_crop_and_mix(x, lam, keep=1, scale=(2 / 7, 1.0), ratio=(3 / 4, 4 / 3),
                                generator=None, memory_format=torch.contiguous_format):
    """Crop every map like random_resized_crop (same boxes, same random draws), then keep the first
    ``keep`` maps as they are and mix the rest pairwise like mixup_pairs: returns the batch
    [crops[:keep], lam * crops[a] + (1 - lam) * crops[b]] of keep + (n - keep) // 2 maps,
    contiguous in ``memory_format``.

    The mixing weights scale the crop taps, so each mixed position is one weighted sum of the
    eight taps of its pair (the kept maps' four taps are padded with four of weight 0): no crop
    batch, mixing pass or concatenation in between (same values up to float rounding).
    """
    n, _, height, width = x.shape
    top, left, h, w = sample_crop_boxes(n, height, width, scale, ratio, generator=generator, device=x.device)
    half = (n - keep) // 2
    a, b = slice(keep, keep + half), slice(keep + half, keep + 2 * half)
    rows, weights = _crop_taps(top, left, h, w, height, width)
    rows = torch.cat([rows[:keep].repeat(1, 1, 2), torch.cat([rows[a], rows[b]], -1)])
    weights = torch.cat([torch.cat([weights[:keep], torch.zeros_like(weights[:keep])], -1),
                         torch.cat([lam * weights[a], (1.0 - lam) * weights[b]], -1)])
    return _weighted_rows(x, rows.view(-1, 8), weights.view(-1, 8), keep + half, memory_format)


def mixup_pairs(x, labels, lam):
    """Mix the first half of a batch with the second half, pairwise: lam*a + (1-lam)*b.

    Returns (mixed [n//2, ...], labels_a, labels_b). An odd last item is dropped.
    """
    half = x.shape[0] // 2
    a, b = x[:half], x[half:2 * half]
    return lam * a + (1.0 - lam) * b, labels[:half], labels[half:2 * half]


def augment_replay_batch(x, labels, lam=None, crops=True, scale=(2 / 7, 1.0), ratio=(3 / 4, 4 / 3),
                         generator=None, keep=1, memory_format=torch.contiguous_format):
    """The streaming step's latent augmentation of [new maps, replayed maps].

    Every map is cropped (``crops``); then, when ``lam`` is given, the maps after the first
    ``keep`` (the new sample, never mixed) are mixed pairwise as in ``mixup_pairs``. Returns the
    batch, contiguous in ``memory_format`` (F's), and its labels: (x, labels_a, labels_b),
    labels_b None without mixing.
    """
    if lam is None:
        if crops:
            x = random_resized_crop(x, scale, ratio, generator=generator, memory_format=memory_format)
        return x.contiguous(memory_format=memory_format), labels, None
    if crops:
        x = random_resized_crop_and_mix(x, lam, keep, scale, ratio, generator=generator,
                                        memory_format=memory_format)
    else:
        x = torch.cat([x[:keep], mixup_pairs(x[keep:], labels[keep:], lam)[0]])
    half = (len(labels) - keep) // 2
    labels_a = torch.cat([labels[:keep], labels[keep:keep + half]])
    labels_b = torch.cat([labels[:keep], labels[keep + half:keep + 2 * half]])
    return x.contiguous(memory_format=memory_format), labels_a, labels_b

