"""Torch side of the ImageNet-style data: transforms, a class-range dataset, corrupt-image handling.

Images are read with PIL (torchvision's C++ image decoding is not available beside a CPU-only
torch here). A dataset item is ``(image, ordered_label, sample_index)`` where ``sample_index`` is
the image's position in the ImageFolder sample list: the id the replay buffer and the h5 files
keep. Items of a class range keep ImageFolder order (ascending sample index).

An unreadable image never surfaces as a traceback from a DataLoader worker: the worker returns a
marker, and ``iterate_batches`` in the main process either raises one clear ``CorruptImageError``
naming the file, or (``--skip_corrupt_images``) drops it and counts it.
"""

import remind  # noqa: F401  (makes torchvision importable beside a CPU-only torch)
import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms

from image_classification_experiments import imagenet_folders as folders
from remind.feature_store import UnreadableImage, UnreadableImageError, UnreadableImages, read_rgb
from image_classification_experiments.imagenet_folders import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# One policy for unreadable images in every family (remind.feature_store): the marker a loader
# returns in place of an image, and the error when skipping was not asked for.
Unreadable = UnreadableImage
CorruptImageError = UnreadableImageError


# Evaluation/extraction: Resize(short side = image_size x ratio) + CenterCrop(image_size). The
# reference's 256/224 suits large photos (ImageNet at 224 px); for images already stored at
# --image_size it only throws away the border, and 1.0 keeps the whole image.
DEFAULT_EVAL_RESIZE_RATIO = 256 / 224


def parse_ratio(text):
    """A positive number, written as a decimal (1.0) or a fraction (256/224)."""
    import argparse

    try:
        num, _, den = str(text).partition("/")
        value = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 256/224, got {text!r}") from None
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 1 (the crop is taken from the resized image), got {text!r}")
    return value


def add_eval_resize_argument(parser):
    """``--eval_resize_ratio``: the one spelling every script that builds ``val_transform`` uses."""
    parser.add_argument("--eval_resize_ratio", type=parse_ratio, default=DEFAULT_EVAL_RESIZE_RATIO,
                        metavar="R", help="evaluation/extraction transform: resize the short side to "
                        "image_size x R, then center-crop image_size (default 256/224, the reference at "
                        "224 px; 1.0 for images already at --image_size: no border is cut)")


def resize_size(image_size, ratio=DEFAULT_EVAL_RESIZE_RATIO):
    """The short-side resize before the center crop: 256 for 224 at the default ratio."""
    return int(round(image_size * ratio))


def train_transform(image_size=224):
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def val_transform(image_size=224, resize_ratio=DEFAULT_EVAL_RESIZE_RATIO):
    """Resize(image_size x resize_ratio) + CenterCrop(image_size) + normalisation (no randomness)."""
    return transforms.Compose([
        transforms.Resize(resize_size(image_size, resize_ratio)),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def pil_loader(path):
    """RGB PIL image (same as torchvision's default loader; ``convert`` forces the full decode)."""
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


class ClassRangeDataset(Dataset):
    """Images whose ordered label lies in [min_class, max_class), in ImageFolder sample order.

    ``samples``: [(path, wnid)] of the whole split; ``labels``: ordered label of every sample.
    Unreadable files raise ``CorruptImageError``, or come back as ``Unreadable`` markers with
    ``mark_unreadable=True`` (what the scripts use, together with ``collate_marking``).
    """

    def __init__(self, samples, labels, min_class, max_class, transform=None, max_per_class=None,
                 mark_unreadable=False):
        if len(samples) != len(labels):
            raise DataError(f"{len(samples)} samples but {len(labels)} labels")
        self.samples = samples
        self.labels = np.asarray(labels, dtype=np.int64)
        self.min_class, self.max_class = int(min_class), int(max_class)
        self.indices = folders.range_indices(self.labels, min_class, max_class, max_per_class)
        self.transform = transform
        self.mark_unreadable = mark_unreadable

    def __len__(self):
        return len(self.indices)

    @property
    def range_labels(self):
        return self.labels[self.indices]

    def __getitem__(self, i):
        index = int(self.indices[i])
        path = self.samples[index][0]
        label = int(self.labels[index])
        img = read_rgb(path)
        if isinstance(img, UnreadableImage):
            if not self.mark_unreadable:
                raise CorruptImageError(f"cannot read image {path}: {img.reason}")
            return img, label, index
        if self.transform is not None:
            img = self.transform(img)
        return img, label, index


def collate_marking(batch):
    """(images, labels, indices, unreadable) with unreadable items taken out of the batch."""
    good = [item for item in batch if not isinstance(item[0], Unreadable)]
    bad = [item[0] for item in batch if isinstance(item[0], Unreadable)]
    if not good:
        return None, None, None, bad
    x, y, idx = default_collate(good)
    return x, y, idx, bad


class UnreadableTally(UnreadableImages):
    """The shared unreadable-image policy with this family's flag, --skip_corrupt_images."""

    def __init__(self, skip, max_warnings=10):
        super().__init__(skip, skip_flag="--skip_corrupt_images", max_warnings=max_warnings)


def iterate_batches(loader, tally):
    """Yield (x, y, idx) from a loader built with ``collate_marking``; bad files go to ``tally``.

    A batch whose every image is unreadable is yielded as (None, None, None) so that callers
    running in lock-step across processes (DDP) can still take part in the step.
    """
    for x, y, idx, bad in loader:
        tally.handle(bad)
        yield x, y, idx


def make_loader(dataset, batch_size, num_workers, sampler=None, pin_memory=False, generator=None,
                persistent=False):
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=num_workers, collate_fn=collate_marking, pin_memory=pin_memory,
                      generator=generator, drop_last=False,
                      persistent_workers=persistent and num_workers > 0)


def load_split(data_dir, split, labels_dir, val_labels_csv=None):
    """(samples, labels, label_path) of one split, the labels checked against the folder tree."""
    samples = folders.scan_split(data_dir, split, val_labels_csv)
    labels, path = folders.load_labels(labels_dir, split, samples)
    return samples, labels, path


def check_image_size(image_size):
    if image_size < 8:
        raise DataError(f"--image_size {image_size}: too small (ResNet-18 needs at least 8 px)")
