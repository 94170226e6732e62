"""The reference code's per-sample streaming step, whole, for timing beside ``REMINDModel.fit_sample``.

It rebuilds what the reference's ``fit_incremental_batch`` does for one new sample, on the same F,
the same quantizer (as faiss, ``pq.to_faiss()``) and the same batch shape (1 new + 50 mixed pairs
drawn from 100 replayed codes):

1. encode the new feature map with faiss ``compute_codes`` on a host numpy array (the map is
   copied off the device, transposed to channels-last and flattened to vectors);
2. draw 100 distinct positions of the id list with numpy ``randint`` batches (``ref_draw``) and copy
   each item's codes and label out of the dict ``{id: [codes, label array]}`` one by one (codes into
   a numpy batch, labels one by one into a device tensor);
3. faiss ``decode`` of the 101 codes on the host, reshaped to N, H, W, C, transposed to NCHW (a
   channels-last view) and moved to the device;
4. one ``F.interpolate`` crop per tensor (``reference_crops``; the crop is resized back to the map's
   own size, where the reference fixed 7, its only map size);
5. mixup of the replayed pairs with a numpy beta ``lam``, the new sample first and never mixed, the
   batch and its labels assembled in host tensors and moved to the device;
6. one SGD step on F at the class's learning rate (``remind.schedule.per_class_lr``, the settings of
   ``StreamingConfig``), and ``loss.item()`` for the reference's running loss;
7. the new item joins the list, the dict and its class's list; the full buffer then evicts a random
   item of the largest class with ``list.remove`` (``ReferenceBookkeeping.add``).

The reference encoded a loader batch at a time; here, as in the step table, each new map is encoded
on its own. Its optimizer restarted per class; here one optimizer takes the per-class rate, as ours.
"""
import random

import numpy as np
import torch
import torch.nn.functional as nnf

from benchmarks.reference_step import ReferenceBookkeeping, build_reference_store, ref_draw, reference_crops
from benchmarks.step_shape import NUM_REPLAY
from remind.model import StreamingConfig
from remind.schedule import per_class_lr


class ReferenceStep:
    """``step(feature_map, label, item_id)``: the reference's streaming step for one new sample.

    f: F, trained in place (on ``device``). pq: this project's ProductQuantizer (its centroids go to
    faiss). buffer: a full ReplayBuffer whose items (slot i = id i) seed the reference's dict, list
    and class lists; it is only read here.
    """

    def __init__(self, f, pq, buffer, device="cpu", seed=0, config=None):
        self.config = cfg = config or StreamingConfig()
        self.device = torch.device(device)
        self.f = f.to(self.device).train()
        self.faiss_pq = pq.to_faiss()
        self.d, self.m = pq.d, pq.M
        self.map_hw = tuple(buffer.code_shape[:2])
        latent_dict, _, self.dict_build_s = build_reference_store(buffer)
        labels = [int(v[1][0]) for v in latent_dict.values()]
        self.book = ReferenceBookkeeping(len(latent_dict), seed, labels=labels, store=latent_dict)
        self.optimizer = torch.optim.SGD(self.f.parameters(), lr=cfg.start_lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.num_draw = 2 * NUM_REPLAY
        self.class_counts = {}
        self.np_rng = np.random.default_rng(seed)
        random.seed(seed)  # the crops draw from Python's global RNG, as the reference's did

    def encode(self, feature_map):
        """[1, C, H, W] map on the device -> [H, W, M] uint8 codes, by faiss on the host."""
        a = feature_map.detach().cpu().numpy().transpose(0, 2, 3, 1).reshape(-1, self.d)
        return self.faiss_pq.compute_codes(np.ascontiguousarray(a)).reshape(*self.map_hw, self.m)

    def _replay_batch(self, x, label):
        """New codes + replayed codes (numpy) and their labels (device int32, written one by one)."""
        k, store = self.num_draw, self.book.store
        codes = np.empty((k + 1, *self.map_hw, self.m), dtype=np.uint8)
        labels = torch.empty(k + 1, dtype=torch.int, device=self.device)
        codes[0], labels[0] = x, label
        ids = [self.book.ids[j] for j in ref_draw(len(self.book.ids), k, self.np_rng)]
        for i, v in enumerate(ids):
            codes[i + 1] = store[v][0]
            labels[i + 1] = torch.from_numpy(store[v][1])[0]
        return codes, labels

    def _decode(self, codes):
        """faiss decode on the host, channels-last, viewed as NCHW and moved to the device."""
        dec = self.faiss_pq.decode(codes.reshape(-1, self.m)).reshape(-1, *self.map_hw, self.d)
        return torch.from_numpy(dec.transpose(0, 3, 1, 2)).to(self.device)

    def _mixup(self, maps, labels, label):
        """New map first; the replayed halves mixed pairwise (numpy beta lam); host assembly."""
        cfg, n = self.config, NUM_REPLAY
        lam = float(self.np_rng.beta(cfg.mixup_alpha, cfg.mixup_alpha)) if cfg.mixup_alpha > 0 else 1.0
        mixed = lam * maps[1:1 + n] + (1 - lam) * maps[1 + n:]
        data = torch.empty((n + 1, *maps.shape[1:]))
        data[0] = maps[0]
        data[1:] = mixed.clone()
        labels_a, labels_b = torch.zeros(n + 1).long(), torch.zeros(n + 1).long()
        labels_a[0] = labels_b[0] = label
        labels_a[1:] = labels[1:1 + n]
        labels_b[1:] = labels[1 + n:]
        return data.to(self.device), labels_a.to(self.device), labels_b.to(self.device), lam

    def _update_f(self, data, labels_a, labels_b, lam, label):
        cfg = self.config
        lr = per_class_lr(self.class_counts.get(label, 0), cfg.start_lr, cfg.end_lr, cfg.lr_step_size,
                          cfg.samples_per_class)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out = self.f(data)
        loss = (lam * nnf.cross_entropy(out, labels_a, reduction="none")
                + (1 - lam) * nnf.cross_entropy(out, labels_b, reduction="none")).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def __call__(self, feature_map, label, item_id):
        """One step for a new sample (its [1, C, H, W] feature map); returns the loss (a float)."""
        label = int(label)
        x = self.encode(feature_map)
        codes, labels = self._replay_batch(x, label)
        maps = reference_crops(self._decode(codes), self.config.crop_scale, self.config.crop_ratio)
        data, labels_a, labels_b, lam = self._mixup(maps, labels, label)
        loss = self._update_f(data, labels_a, labels_b, lam, label)
        self.book.add(int(item_id), label, [x, np.array([label])])
        self.class_counts[label] = self.class_counts.get(label, 0) + 1
        return loss
