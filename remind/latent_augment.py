"""Augmentation of reconstructed feature maps, for a whole replay batch at once.

``random_resized_crop`` draws the reference's crop parameters (scale and log-uniform aspect ratio,
10 tries, then the center-crop fallback) for every tensor of the batch in one go, and writes
"crop, then bilinear resize back with align_corners=False" as two small interpolation matrices per
tensor: out = Ry @ x @ Rx^T (for small maps, as one matrix kron(Ry, Rx) on the flattened map, a
single batched matrix product). That equals ``F.interpolate`` on each crop (up to float rounding)
with no Python loop over tensors.
"""
import math

import torch


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


def _interpolation_matrix(start, length, out_size, in_size, dtype):
    """[n, out_size, in_size]: bilinear (align_corners=False) resize of [start, start+length)."""
    n, device = start.shape[0], start.device
    length_f = length.to(torch.float64).unsqueeze(1)
    o = torch.arange(out_size, device=device, dtype=torch.float64).unsqueeze(0)
    src = ((o + 0.5) * (length_f / out_size) - 0.5).clamp_min(0.0)
    i0 = src.floor().long()
    i0 = torch.minimum(i0, (length - 1).unsqueeze(1))
    step = (i0 < (length - 1).unsqueeze(1)).long()
    frac = (src - i0.to(torch.float64))
    frac = torch.where(step.bool(), frac, torch.zeros_like(frac))
    mat = torch.zeros(n, out_size, in_size, device=device, dtype=torch.float64)
    base = start.unsqueeze(1)
    mat.scatter_add_(2, (base + i0).unsqueeze(2), (1.0 - frac).unsqueeze(2))
    mat.scatter_add_(2, (base + i0 + step).unsqueeze(2), frac.unsqueeze(2))
    return mat.to(dtype)


# Up to this many positions per map, the crop is one matrix product per map (see resized_crop).
KRON_MAX_POSITIONS = 64


def resized_crop(x, top, left, h, w):
    """Crop each map of x [n, C, H, W] to its box and resize it back to H x W (bilinear).

    x may be any strided view, e.g. channels-last decoded codes viewed as NCHW. For small maps
    (H * W <= 64, e.g. 7 x 7) the two resizes become one [HW, HW] matrix per map,
    kron(Ry, Rx), and the crop is a single batched matrix product that also writes the result
    in contiguous NCHW order whatever x's layout; larger maps keep the separable form.
    """
    n, c, height, width = x.shape
    if height * width > KRON_MAX_POSITIONS:
        ry = _interpolation_matrix(top, h, height, height, x.dtype)
        rx = _interpolation_matrix(left, w, width, width, x.dtype)
        return torch.einsum("nij,ncjk,nlk->ncil", ry, x, rx)
    kron = _crop_matrices(top, left, h, w, height, width)
    out = torch.bmm(x.flatten(2), kron.to(x.dtype).transpose(1, 2))  # [n, C, HW]
    return out.view(n, c, height, width)


def _crop_matrices(top, left, h, w, height, width):
    """float64 [n, HW, HW]: kron[n, i*W + l, j*W + k] = Ry[n, i, j] * Rx[n, l, k]."""
    ry = _interpolation_matrix(top, h, height, height, torch.float64)
    rx = _interpolation_matrix(left, w, width, width, torch.float64)
    return (ry[:, :, None, :, None] * rx[:, None, :, None, :]).reshape(-1, height * width, height * width)


def random_resized_crop(x, scale=(2 / 7, 1.0), ratio=(3 / 4, 4 / 3), generator=None):
    """Independent random resized crop of every feature map in x [n, C, H, W]."""
    top, left, h, w = sample_crop_boxes(x.shape[0], x.shape[2], x.shape[3], scale, ratio,
                                        generator=generator, device=x.device)
    return resized_crop(x, top, left, h, w)


def random_resized_crop_and_mix(x, lam, keep=1, scale=(2 / 7, 1.0), ratio=(3 / 4, 4 / 3),
                                generator=None):
    """Crop every map like random_resized_crop (same boxes, same random draws), then keep the first
    ``keep`` maps as they are and mix the rest pairwise like mixup_pairs: returns the contiguous
    batch [crops[:keep], lam * crops[a] + (1 - lam) * crops[b]] of keep + (n - keep) // 2 maps.

    For small maps the mixing weights are folded into the crop matrices, so the crops of a pair and
    their mix are two batched matrix products writing straight into the output: no separate crop
    batch, mixing passes or concatenation (same values up to float rounding).
    """
    n, c, height, width = x.shape
    top, left, h, w = sample_crop_boxes(n, height, width, scale, ratio, generator=generator, device=x.device)
    half = (n - keep) // 2
    a, b = slice(keep, keep + half), slice(keep + half, keep + 2 * half)
    if height * width > KRON_MAX_POSITIONS:
        crops = resized_crop(x, top, left, h, w)
        return torch.cat([crops[:keep], lam * crops[a] + (1.0 - lam) * crops[b]]).contiguous()
    kron = _crop_matrices(top, left, h, w, height, width)
    flat = x.flatten(2)
    out = torch.empty(keep + half, c, height * width, dtype=x.dtype, device=x.device)
    torch.bmm(flat[:keep], kron[:keep].to(x.dtype).transpose(1, 2), out=out[:keep])
    torch.bmm(flat[a], (lam * kron[a]).to(x.dtype).transpose(1, 2), out=out[keep:])
    out[keep:].baddbmm_(flat[b], ((1.0 - lam) * kron[b]).to(x.dtype).transpose(1, 2))
    return out.view(keep + half, c, height, width)


def mixup_pairs(x, labels, lam):
    """Mix the first half of a batch with the second half, pairwise: lam*a + (1-lam)*b.

    Returns (mixed [n//2, ...], labels_a, labels_b). An odd last item is dropped.
    """
    half = x.shape[0] // 2
    a, b = x[:half], x[half:2 * half]
    return lam * a + (1.0 - lam) * b, labels[:half], labels[half:2 * half]


def augment_replay_batch(x, labels, lam=None, crops=True, scale=(2 / 7, 1.0), ratio=(3 / 4, 4 / 3),
                         generator=None, keep=1):
    """The streaming step's latent augmentation of [new maps, replayed maps].

    Every map is cropped (``crops``); then, when ``lam`` is given, the maps after the first
    ``keep`` (the new sample, never mixed) are mixed pairwise as in ``mixup_pairs``. Returns the
    contiguous batch and its labels: (x, labels_a, labels_b), labels_b None without mixing.
    """
    if lam is None:
        if crops:
            x = random_resized_crop(x, scale, ratio, generator=generator)
        return x.contiguous(), labels, None
    if crops:
        x = random_resized_crop_and_mix(x, lam, keep, scale, ratio, generator=generator)
    else:
        x = torch.cat([x[:keep], mixup_pairs(x[keep:], labels[keep:], lam)[0]])
    half = (len(labels) - keep) // 2
    labels_a = torch.cat([labels[:keep], labels[keep:keep + half]])
    labels_b = torch.cat([labels[:keep], labels[keep + half:keep + 2 * half]])
    return x.contiguous(), labels_a, labels_b

