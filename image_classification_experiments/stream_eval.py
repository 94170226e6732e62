"""Evaluation of an image-classification stream: the evaluation images' codes, computed once, and
top-1/top-5 on named groups of them.

G and the quantizer never change during a stream, so each image's PQ codes are computed the first
time it is needed and kept; an evaluation is then a decode and an F pass (the reference re-ran G
four times per point).
"""
import torch
from tqdm import tqdm

from image_classification_experiments import imagenet_data as data
from image_classification_experiments.imagenet_folders import DataError
from remind.metrics import topk_accuracy
from remind.runtime import progress_disabled


def encode_batches(model, dataset, args, tally, desc, leave=False):
    """Yield (codes, labels, sample indices) of ``dataset`` (items ``(image, label, index)``), a
    loader batch at a time; unreadable images go to ``tally`` (a batch of only those is skipped)."""
    loader = data.make_loader(dataset, args.batch_size, args.num_workers, pin_memory=model.device.type == "cuda")
    for x, y, idx in data.iterate_batches(loader, tally):
        if x is not None:
            yield model.encode_images(x), y, idx


class EvalCodes:
    """Codes and labels of the evaluation images, grown on demand.

    ``dataset_between(lo, hi)``: the evaluation images of the keys in [lo, hi) (ImageNet: classes),
    items ``(image, label, index)``; codes already held are never recomputed. A data set whose
    images are all evaluated at every point uses one key: ``start=0`` and ``upto(model, 1)``.
    """

    def __init__(self, dataset_between, start, args, tally, what="evaluation images"):
        self.dataset_between, self.args, self.tally, self.what = dataset_between, args, tally, what
        self.start = self.hi = start
        self.codes, self.targets, self.indices = [], [], []

    def upto(self, model, hi):
        """(codes, targets) of every evaluation image of the keys in [start, hi)."""
        if hi > self.hi:
            ds = self.dataset_between(self.hi, hi)
            bar = tqdm(total=len(ds), desc=f"{self.what} {self.hi}-{hi - 1}", unit="img", dynamic_ncols=True,
                       leave=False, disable=progress_disabled(self.args))
            for codes, y, idx in encode_batches(model, ds, self.args, self.tally, self.what):
                self.codes.append(codes.cpu())
                self.targets.append(y)
                self.indices.append(idx)
                bar.update(len(y))
            bar.close()
            self.hi = hi
        if not self.codes:
            raise DataError(f"no {self.what} for [{self.start}, {hi})")
        return torch.cat(self.codes), torch.cat(self.targets)

    def sample_indices(self):
        """The sample index (in the evaluation split) of each row ``upto`` returned last."""
        return torch.cat(self.indices) if self.indices else torch.empty(0, dtype=torch.long)


def score(probs, targets, groups):
    """{"<group>_top1": .., "<group>_top5": ..} for each (name, boolean mask) in ``groups`` (NaN for
    an empty group)."""
    result = {}
    for name, mask in groups:
        acc = topk_accuracy(probs[mask], targets[mask], ks=(1, 5))
        result[f"{name}_top1"], result[f"{name}_top5"] = acc[1], acc[5]
    return result


def predict(model, codes, args):
    """Softmax probabilities of F over decoded codes (the point's preds file)."""
    return model.predict_codes(codes, batch_size=args.batch_size)


def fmt(v):
    return "  n/a " if v != v else f"{v:6.2f}"
