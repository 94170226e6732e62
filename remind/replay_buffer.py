"""The replay buffer: PQ codes in one contiguous array, with O(1) add, sample and eviction.

Codes of all items share one ``[capacity, *code_shape]`` tensor (uint8 for 8-bit PQ), so a replay
batch is a single gather on the buffer's device. Labels live beside the codes on the same device;
item ids and the per-class bookkeeping live on the host, where the eviction decisions are made
without ever reading the device.

Eviction (the reference rule): when full, remove a uniformly random item of the class that holds
the most items (ties broken uniformly at random), then insert. ``eviction="oldest"`` removes that
class's oldest item (smallest item id) instead: a working version of the VQA code's ``queue``. Classes are kept in buckets by item
count; since an add or an eviction changes one count by one, the largest count moves by at most one
and every operation is O(1) amortized, with no scan over items or classes.
"""
import numpy as np
import torch
from remind.errors import InputError


class ReplayBufferError(InputError, ValueError):
    """Invalid buffer configuration or state."""


class _GrowableInt:
    """An int32 numpy vector with amortized O(1) append and swap-remove."""

    __slots__ = ("data", "n")

    def __init__(self, values=None):
        values = np.asarray([] if values is None else values, dtype=np.int32)
        self.data = np.empty(max(4, len(values)), dtype=np.int32)
        self.data[:len(values)] = values
        self.n = len(values)

    def append(self, v):
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.empty(len(self.data), dtype=np.int32)])
        self.data[self.n] = v
        self.n += 1
        return self.n - 1

    def swap_remove(self, pos):
        """Remove entry ``pos`` by moving the last entry there; returns (moved_value or None)."""
        self.n -= 1
        if pos == self.n:
            return None
        moved = int(self.data[self.n])
        self.data[pos] = moved
        return moved

    def values(self):
        return self.data[:self.n]


class ReplayBuffer:
    EVICTIONS = ("random", "oldest")

    def __init__(self, code_shape, capacity=None, device="cpu", code_dtype=torch.uint8, seed=0,
                 initial_allocation=1024, eviction="random"):
        if capacity is not None and int(capacity) < 1:
            raise ReplayBufferError(f"buffer capacity must be a positive number of items or None, got {capacity}")
        if eviction not in self.EVICTIONS:
            raise ReplayBufferError(f"eviction must be one of {self.EVICTIONS}, got {eviction!r}")
        self.eviction = eviction
        self.code_shape = None if code_shape is None else tuple(int(s) for s in code_shape)
        self.capacity = None if capacity is None else int(capacity)
        self.device = torch.device(device)
        self.code_dtype = code_dtype
        alloc = self.capacity if self.capacity is not None else int(initial_allocation)
        self.codes = self._new_codes(alloc)
        self.labels = torch.empty(alloc, dtype=torch.int64, device=self.device)
        self.item_ids = torch.empty(alloc, dtype=torch.int64)
        self._size = 0
        self._pos_in_class = np.empty(alloc, dtype=np.int32)  # slot -> index in its class list
        self._class_slots = {}  # label -> _GrowableInt of slots
        self._buckets = {}  # count -> list of labels holding that many items
        self._pos_in_bucket = {}  # label -> index in its bucket list
        self._max_count = 0
        self._host_rng = np.random.Generator(np.random.PCG64(seed))
        self._device_gen = torch.Generator(device=self.device)
        self._device_gen.manual_seed(int(seed))

    def _new_codes(self, n):
        if self.code_shape is None:
            return None
        return torch.empty((n, *self.code_shape), dtype=self.code_dtype, device=self.device)

    # ------------------------------------------------------------------------- properties
    def __len__(self):
        return self._size

    @property
    def is_full(self):
        return self.capacity is not None and self._size >= self.capacity

    def class_counts(self):
        return {c: s.n for c, s in self._class_slots.items() if s.n > 0}

    @property
    def nbytes(self):
        """Bytes held by the buffer: codes, labels, ids and the class bookkeeping."""
        total = self.labels.numel() * 8 + self.item_ids.numel() * 8 + self._pos_in_class.nbytes
        if self.codes is not None:
            total += self.codes.numel() * self.codes.element_size()
        total += sum(s.data.nbytes for s in self._class_slots.values())
        return total

    # ----------------------------------------------------------------- class bookkeeping
    def _bucket_move(self, label, old, new):
        if old > 0:
            bucket = self._buckets[old]
            pos = self._pos_in_bucket[label]
            last = bucket.pop()
            if last != label:
                bucket[pos] = last
                self._pos_in_bucket[last] = pos
            if not bucket:
                del self._buckets[old]
        if new > 0:
            bucket = self._buckets.setdefault(new, [])
            self._pos_in_bucket[label] = len(bucket)
            bucket.append(label)
        # Counts move by one, so the largest count moves by at most one.
        if new > self._max_count:
            self._max_count = new
        elif old == self._max_count and old not in self._buckets:
            self._max_count = old - 1

    def _register(self, slot, label):
        slots = self._class_slots.get(label)
        if slots is None:
            slots = self._class_slots[label] = _GrowableInt()
        self._pos_in_class[slot] = slots.append(slot)
        self._bucket_move(label, slots.n - 1, slots.n)

    def _unregister(self, slot, label):
        slots = self._class_slots[label]
        moved = slots.swap_remove(int(self._pos_in_class[slot]))
        if moved is not None:
            self._pos_in_class[moved] = self._pos_in_class[slot]
        self._bucket_move(label, slots.n + 1, slots.n)

    def _choose_eviction(self):
        """A slot of a uniformly random class among those holding the most items: a uniformly
        random one, or (eviction="oldest") the one with the smallest item id, O(class size)."""
        bucket = self._buckets[self._max_count]
        label = bucket[int(self._host_rng.integers(len(bucket)))] if len(bucket) > 1 else bucket[0]
        slots = self._class_slots[label]
        if self.eviction == "oldest":
            members = torch.from_numpy(slots.values().astype(np.int64))
            return int(members[torch.argmin(self.item_ids[members])]), label
        slot = int(slots.data[int(self._host_rng.integers(slots.n))])
        return slot, label

    # ----------------------------------------------------------------------- insertion
    def _grow(self, needed):
        alloc = self.labels.numel()
        if needed <= alloc:
            return
        new_alloc = max(needed, alloc + alloc // 2 + 1)
        if self.codes is not None:
            codes = self._new_codes(new_alloc)
            codes[:self._size] = self.codes[:self._size]
            self.codes = codes
        labels = torch.empty(new_alloc, dtype=torch.int64, device=self.device)
        labels[:self._size] = self.labels[:self._size]
        self.labels = labels
        ids = torch.empty(new_alloc, dtype=torch.int64)
        ids[:self._size] = self.item_ids[:self._size]
        self.item_ids = ids
        pos = np.empty(new_alloc, dtype=np.int32)
        pos[:self._size] = self._pos_in_class[:self._size]
        self._pos_in_class = pos

    def add(self, codes, label, item_id):
        """Insert one item (evicting first when full). Returns the evicted item's id, or None."""
        label, item_id = int(label), int(item_id)
        evicted = None
        if self.is_full:
            slot, old_label = self._choose_eviction()
            self._unregister(slot, old_label)
            evicted = int(self.item_ids[slot])
        else:
            slot = self._size
            self._grow(slot + 1)
            self._size += 1
        if self.codes is not None:
            self.codes[slot] = codes
        self.labels[slot] = label
        self.item_ids[slot] = item_id
        self._register(slot, label)
        return evicted

    def add_batch(self, codes, labels, item_ids):
        """Insert many items in order; items that fit without eviction are copied in one block."""
        labels = [int(v) for v in (labels.tolist() if hasattr(labels, "tolist") else labels)]
        item_ids = [int(v) for v in (item_ids.tolist() if hasattr(item_ids, "tolist") else item_ids)]
        if len(labels) != len(item_ids) or (codes is not None and len(codes) != len(labels)):
            raise ReplayBufferError("codes, labels and item ids must have the same length")
        room = len(labels) if self.capacity is None else max(0, min(len(labels), self.capacity - self._size))
        if room:
            start = self._size
            self._grow(start + room)
            if self.codes is not None:
                self.codes[start:start + room] = torch.as_tensor(codes[:room]).to(self.device, self.code_dtype)
            self.labels[start:start + room] = torch.as_tensor(labels[:room], dtype=torch.int64)
            self.item_ids[start:start + room] = torch.as_tensor(item_ids[:room], dtype=torch.int64)
            self._size += room
            for i in range(room):
                self._register(start + i, labels[i])
        evicted = []
        for i in range(room, len(labels)):
            e = self.add(None if codes is None else codes[i], labels[i], item_ids[i])
            evicted.append(e)
        return evicted

    # ------------------------------------------------------------------------- sampling
    def sample(self, k):
        """min(k, len) distinct slots, uniformly without replacement, as a LongTensor on the device.

        For a buffer much larger than k, draw 2k slots with replacement and keep the first k
        distinct ones in draw order: by symmetry every ordered k-tuple of distinct slots is equally
        likely, and the cost is O(k) instead of the O(n) of a permutation. Fewer than k distinct
        values among 2k draws from n >= 16k slots needs over k collisions (expected about k/8):
        probability below 1e-40, where a slot would repeat. The draw never reads a device value on
        the host, so the same code runs on every device and a CUDA step needs no synchronisation.
        """
        n, k = self._size, min(int(k), self._size)
        if k <= 0:
            return torch.empty(0, dtype=torch.int64, device=self.device)
        g = self._device_gen
        if n < 16 * k:
            return torch.randperm(n, generator=g, device=self.device)[:k]
        cand = torch.randint(n, (2 * k,), generator=g, device=self.device)
        sorted_vals, order = torch.sort(cand, stable=True)
        dup_sorted = torch.zeros_like(cand, dtype=torch.bool)
        dup_sorted[1:] = sorted_vals[1:] == sorted_vals[:-1]
        dup = torch.empty_like(dup_sorted).scatter_(0, order, dup_sorted)
        key = torch.arange(2 * k, device=self.device) + dup.long() * (2 * k)
        keep = torch.topk(key, k, largest=False, sorted=True).indices
        return cand[keep]

    # ---------------------------------------------------------------------------- state
    def state_dict(self):
        n = self._size
        order, counts = [], []
        for count in sorted(self._buckets):
            for label in self._buckets[count]:
                order.append(label)
                counts.append(count)
        return {
            "code_shape": None if self.code_shape is None else list(self.code_shape),
            "capacity": self.capacity,
            "codes": None if self.codes is None else self.codes[:n].cpu().clone(),
            "labels": self.labels[:n].cpu().clone(),
            "item_ids": self.item_ids[:n].clone(),
            "pos_in_class": torch.from_numpy(self._pos_in_class[:n].copy()),
            "bucket_labels": torch.tensor(order, dtype=torch.int64),
            "host_rng": self._host_rng.bit_generator.state,
            "device_rng": self._device_gen.get_state(),
        }

    def load_state_dict(self, state):
        shape = None if state["code_shape"] is None else tuple(state["code_shape"])
        if shape != self.code_shape:
            raise ReplayBufferError(f"buffer state holds codes of shape {shape}, this buffer expects {self.code_shape}")
        self.capacity = state["capacity"]
        labels = state["labels"].long()
        n = len(labels)
        alloc = self.capacity if self.capacity is not None else max(n, 1024)
        if self.capacity is not None and n > self.capacity:
            raise ReplayBufferError(f"buffer state holds {n} items, more than its capacity {self.capacity}")
        self.codes = self._new_codes(alloc)
        if self.codes is not None:
            self.codes[:n] = state["codes"].to(self.device, self.code_dtype)
        self.labels = torch.empty(alloc, dtype=torch.int64, device=self.device)
        self.labels[:n] = labels.to(self.device)
        self.item_ids = torch.empty(alloc, dtype=torch.int64)
        self.item_ids[:n] = state["item_ids"].long()
        self._size = n
        self._pos_in_class = np.empty(alloc, dtype=np.int32)
        pos = state["pos_in_class"].numpy().astype(np.int32)
        self._pos_in_class[:n] = pos
        # Rebuild each class's slot list in its saved order, and the buckets in theirs, so the
        # restored buffer makes exactly the choices the saved one would have made.
        labels_np = labels.numpy()
        self._class_slots = {}
        for label in np.unique(labels_np).tolist():
            slots = np.flatnonzero(labels_np == label)
            ordered = np.empty(len(slots), dtype=np.int32)
            ordered[pos[slots]] = slots
            self._class_slots[int(label)] = _GrowableInt(ordered)
        self._buckets, self._pos_in_bucket = {}, {}
        for label in state["bucket_labels"].tolist():
            count = self._class_slots[label].n
            bucket = self._buckets.setdefault(count, [])
            self._pos_in_bucket[label] = len(bucket)
            bucket.append(label)
        self._max_count = max(self._buckets) if self._buckets else 0
        self._host_rng.bit_generator.state = state["host_rng"]
        self._device_gen.set_state(state["device_rng"])
