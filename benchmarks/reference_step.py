"""The reference code's approach to the step's small stages, measured beside ours where they differ.

The reference crops each latent tensor with its own ``F.interpolate`` call, keeps the buffer as a
dict of per-item numpy arrays plus a Python list of ids, evicts with ``list.remove`` (a scan of
up to 959,665 ids), and encodes/decodes with faiss on host arrays. Each comparison below rebuilds
that approach at the benchmark's shape and times it against the equivalent call of this project.
Each returns rows {what, reference, ours, ref_s, ours_s}; a comparison's data lives in its own
function, so the large reference structures are freed before the next one is built.

The crop rows feed both sides what the real steps crop: decoded maps in channels-last memory
viewed as NCHW (ours: ``quantizer.decode(codes).permute(0, 3, 1, 2)``; the reference: its faiss
decode, reshaped to N, H, W, C and transposed), not a contiguous NCHW batch.

The whole per-sample step the reference takes, built from these pieces, is
``benchmarks.reference_stream.ReferenceStep``.
"""
import collections
import itertools
import math
import random
import time

import numpy as np
import torch
import torch.nn.functional as nnf

from benchmarks.measure import device_sync, time_median
from benchmarks.step_shape import C, H, M, NUM_CLASSES, NUM_REPLAY, REFERENCE_LIST_LEN, W
from remind.latent_augment import random_resized_crop, random_resized_crop_and_mix


# --------------------------------------------------------------------------- latent crops
def _ref_crop_params(height, width, scale, ratio):
    """Crop box drawn the reference's way: Python random, 10 tries, center fallback."""
    area = height * width
    for _ in range(10):
        target_area = random.uniform(*scale) * area
        aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if w <= width and h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    return 0, 0, height, width


def reference_crops(x, scale=(2 / 7, 1.0), ratio=(3 / 4, 4 / 3)):
    """One crop + F.interpolate call per tensor, written into a new NCHW batch (the reference's loop;
    its F took NCHW)."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for i in range(x.shape[0]):
        top, left, h, w = _ref_crop_params(x.shape[2], x.shape[3], scale, ratio)
        out[i] = nnf.interpolate(x[i:i + 1, :, top:top + h, left:left + w], size=(x.shape[2], x.shape[3]),
                                 mode="bilinear", align_corners=False)[0]
    return out


def bench_crops(gen, aug_gen, reps, sync, device, memory_format=torch.contiguous_format):
    """Per-tensor interpolate vs the batched crop (51 and 101 maps), then crops + mixup of 101.
    Ours writes the memory order its F takes (``memory_format``: NCHW, or channels-last without
    the transposing copy); the reference writes NCHW."""
    rows, order = [], "channels-last" if memory_format == torch.channels_last else "NCHW"
    for n in (1 + NUM_REPLAY, 1 + 2 * NUM_REPLAY):
        x = torch.rand(n, H, W, C, generator=gen).to(device).permute(0, 3, 1, 2)  # channels-last, as decoded
        ref = time_median(lambda: reference_crops(x), reps, sync)
        ours = time_median(lambda: random_resized_crop(x, generator=aug_gen, memory_format=memory_format),
                           reps, sync)
        rows.append({"what": f"latent crops, {n} maps", "reference": f"{n} x F.interpolate",
                     "ours": f"batched crop, {order} out", "ref_s": ref, "ours_s": ours})
    # The whole augment stage: crops of 1 + 100 maps, then mixup of the 100 into 50, batch of 51.
    lam = 0.3

    def ref_crop_mix():
        crops = reference_crops(x)
        out = torch.empty(1 + NUM_REPLAY, C, H, W, device=device)
        out[0] = crops[0]
        out[1:] = lam * crops[1:1 + NUM_REPLAY] + (1 - lam) * crops[1 + NUM_REPLAY:]
        return out

    rows.append({"what": f"crops + mixup, {n} maps -> {1 + NUM_REPLAY}",
                 "reference": f"{n} x F.interpolate, then mix", "ours": f"crop and mix, fused, {order} out",
                 "ref_s": time_median(ref_crop_mix, reps, sync),
                 "ours_s": time_median(lambda: random_resized_crop_and_mix(x, lam, 1, generator=aug_gen,
                                                                           memory_format=memory_format),
                                       reps, sync)})
    return rows


# ------------------------------------------------------------------------- replay gather
def ref_draw(n, k, np_rng):
    """k distinct indices in [0, n): draw k at a time with replacement, keep first distinct ones."""
    picked = {}
    while len(picked) < k:
        for r in np_rng.integers(0, n, k).tolist():
            picked[r] = r
            if len(picked) >= k:
                break
    return list(picked)


def build_reference_store(buffer):
    """The reference's buffer holding ``buffer``'s items: {id: [codes, label array]} and a list of
    ids; returns them and the seconds the build took."""
    size = len(buffer)
    codes_np = buffer.codes[:size].cpu().numpy()
    labels_np = buffer.labels[:size].cpu().numpy()
    t0 = time.perf_counter()
    latent_dict = {i: [codes_np[i].copy(), labels_np[i:i + 1].copy()] for i in range(size)}
    rehearsal_ixs = list(range(size))
    return latent_dict, rehearsal_ixs, time.perf_counter() - t0


def bench_gather(buffer, new_codes, seed, reps, sync, device):
    """Replay gather and batch assembly: a dict of per-item arrays vs one contiguous array.
    Returns the two rows and the seconds the reference's dict took to build."""
    latent_dict, rehearsal_ixs, build_s = build_reference_store(buffer)
    size, k = len(buffer), 2 * NUM_REPLAY
    np_rng = np.random.default_rng(seed)
    draws = [ref_draw(size, k, np_rng) for _ in range(reps + 2)]
    ref_calls = itertools.count()

    def ref_codes_only():
        ixs = draws[next(ref_calls) % len(draws)]
        out = np.empty((k, H, W, M), dtype=np.uint8)
        for ii, v in enumerate(ixs):
            out[ii] = latent_dict[v][0]
        return torch.from_numpy(out).to(device)

    slot_sets = [buffer.sample(k) for _ in range(reps + 2)]
    our_calls = itertools.count()

    def our_codes_only():  # as REMINDModel's gather
        return buffer.codes.index_select(0, slot_sets[next(our_calls) % len(slot_sets)])

    rows = [{"what": f"gather {k} codes ({size:,} items)", "reference": "dict of per-item arrays",
             "ours": "contiguous gather", "ref_s": time_median(ref_codes_only, reps, sync),
             "ours_s": time_median(our_codes_only, reps, sync)}]

    def ref_batch():
        # The reference's replay batch: distinct draws, ids via the list, per-item copies of codes
        # and labels (labels written one by one into a tensor), new sample first.
        out = np.empty((k + 1, H, W, M), dtype=np.uint8)
        lab = torch.empty(k + 1, dtype=torch.int64, device=device)
        out[0] = new_codes.numpy()
        lab[0] = 0
        ixs = [rehearsal_ixs[j] for j in ref_draw(size, k, np_rng)]
        for ii, v in enumerate(ixs):
            out[ii + 1] = latent_dict[v][0]
            lab[ii + 1] = torch.from_numpy(latent_dict[v][1])[0]
        return torch.from_numpy(out).to(device), lab

    new_dev = new_codes.to(device)
    new_lab = torch.zeros(1, dtype=torch.int64, device=device)

    def our_batch():
        slots = buffer.sample(k)
        return (torch.cat([new_dev.unsqueeze(0), buffer.codes.index_select(0, slots)]),
                torch.cat([new_lab, buffer.labels.index_select(0, slots)]))

    rows.append({"what": f"draw + assemble replay batch ({size:,} items)",
                 "reference": "randint dict + list + per-item copies", "ours": "buffer.sample + gather",
                 "ref_s": time_median(ref_batch, reps, sync), "ours_s": time_median(our_batch, reps, sync)})
    return rows, build_s


# ------------------------------------------------------------------------------ eviction
class ReferenceBookkeeping:
    """The reference's buffer bookkeeping: a list of all ids (``rehearsal_ixs``), a list of ids per
    class and a dict of items keyed by id; one Python RNG for its choices. Item i (id i) has class
    ``labels[i]`` (default: uniform over the 1000 classes) and value ``store[i]`` (default None)."""

    def __init__(self, n, seed, labels=None, store=None):
        self.n = n
        self.ids = list(range(n))
        if labels is None:
            labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, n).tolist()
        self.class_lists = collections.defaultdict(list)
        for i, c in enumerate(labels):
            self.class_lists[c].append(i)
        self.store = dict.fromkeys(self.ids) if store is None else store
        self.rng = random.Random(seed)
        self.next_id = n

    def list_remove(self):
        """Remove a random id by value (a scan up to the victim, as the reference), append a new one."""
        ids = self.ids
        ids.remove(ids[self.rng.randrange(self.n)])
        ids.append(self.next_id)
        self.next_id += 1

    def add(self, item_id, label, value=None):
        """The reference's add to a full buffer: the item joins the id list, the dict and its class's
        list; then a random item of the largest class (found by a max over classes) leaves all three,
        by ``list.remove`` from the two lists."""
        self.ids.append(item_id)
        self.store[item_id] = value
        class_lists = self.class_lists
        class_lists[label].append(item_id)
        max_key = max(class_lists, key=lambda c: len(class_lists[c]))
        victim = self.rng.choice(class_lists[max_key])
        class_lists[max_key].remove(victim)
        self.store.pop(victim)
        self.ids.remove(victim)

    def evict(self):
        """Add an item of a random class with the next id (evicting as ``add``)."""
        new_id, y = self.next_id, self.rng.randrange(NUM_CLASSES)
        self.next_id += 1
        self.add(new_id, y)


def _reference_eviction_rows(seed, reps, sync):
    n = REFERENCE_LIST_LEN
    book = ReferenceBookkeeping(n, seed)
    rows = [{"what": f"list.remove on a {n:,}-item list", "reference": "rehearsal_ixs.remove",
             "ours": "buffer.add (evict + insert)", "ref_s": time_median(book.list_remove, reps * 5, sync),
             "ours_s": None}]
    book.ids = list(range(n))  # fresh: every id in the class lists is in the list again
    rows.append({"what": f"eviction bookkeeping, {n:,} items", "reference": "max over classes + 2 x list.remove",
                 "ours": "buffer.add (evict + insert)", "ref_s": time_median(book.evict, reps * 5, sync),
                 "ours_s": None})
    return rows


def bench_eviction(buffer, new_codes, gen, seed, reps, sync, device):
    """Eviction at the reference's cap vs buffer.add (evict + insert) on the full largest buffer."""
    rows = _reference_eviction_rows(seed, reps, sync)
    size = len(buffer)
    labs = torch.randint(0, NUM_CLASSES, (reps * 5 + 2,), generator=gen).tolist()
    code_dev = new_codes.to(device)
    calls = itertools.count()

    def our_add():
        i = next(calls)
        buffer.add(code_dev, labs[i % len(labs)], 20 * size + i)

    ours_add = time_median(our_add, reps * 5, sync)
    for r in rows:
        r["ours_s"] = ours_add
        r["ours"] = f"buffer.add, {size:,} items (evict + insert)"
    return rows


# -------------------------------------------------------------------------- encode/decode
def bench_codec(pq, gen, reps, sync, device):
    """Encode/decode: faiss on host arrays (the reference) vs torch on the model's device."""
    k = 2 * NUM_REPLAY
    fpq = pq.to_faiss()
    fm = torch.rand(1, C, H, W, generator=gen).to(device)
    codes_all = torch.randint(0, 256, (k + 1, H, W, M), dtype=torch.uint8, generator=gen).to(device)

    def ref_encode():
        a = np.ascontiguousarray(fm.cpu().numpy().transpose(0, 2, 3, 1).reshape(-1, C))
        return torch.from_numpy(fpq.compute_codes(a).reshape(1, H, W, M)).to(device)

    def ref_decode():  # channels-last result viewed as NCHW (no transpose copy), like ours
        a = fpq.decode(np.ascontiguousarray(codes_all.cpu().numpy().reshape(-1, M)))
        return torch.from_numpy(a.reshape(-1, H, W, C)).to(device).permute(0, 3, 1, 2)

    return [{"what": "encode 1 map (49 vectors)", "reference": "faiss compute_codes (host)",
             "ours": "torch encode_maps", "ref_s": time_median(ref_encode, reps, sync),
             "ours_s": time_median(lambda: pq.encode_maps(fm), reps, sync)},
            {"what": f"decode {k + 1} maps", "reference": "faiss decode (host)",
             "ours": "torch decode (as fit_sample)", "ref_s": time_median(ref_decode, reps, sync),
             "ours_s": time_median(lambda: pq.decode(codes_all).permute(0, 3, 1, 2), reps, sync)}]


# ---------------------------------------------------------------------------------- all
def bench_reference(seed, device, model, big_buffer, reps):
    """Every comparison, in a fixed order (each draws from the same seeded generators as before).
    Returns the rows and the seconds the reference's dict of per-item arrays took to build."""
    sync = device_sync(device)
    gen = torch.Generator().manual_seed(seed + 13)
    random.seed(seed)
    rows = bench_crops(gen, model._aug_gen, reps, sync, device, model.memory_format)
    new_codes = torch.randint(0, 256, (H, W, M), dtype=torch.uint8, generator=gen)
    gather_rows, build_s = bench_gather(big_buffer, new_codes, seed, reps, sync, device)
    rows += gather_rows
    rows += bench_eviction(big_buffer, new_codes, gen, seed, reps, sync, device)
    rows += bench_codec(model.quantizer, gen, reps, sync, device)
    return rows, build_s
