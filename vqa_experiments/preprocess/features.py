"""Frozen-CNN feature maps of every train and val image (DATA_FORMATS.md section 5).

The reference's G: a torchvision ResNet truncated after ``layer3`` (CLEVR, ResNet-101) or
``layer4`` (TDIUC, ResNet-152), images resized to 224x224 bicubic without crop, ImageNet
normalisation, eval mode. Any torchvision ResNet, cut point and input size can be chosen.
"""
import collections
import os

import numpy as np
import torch
from PIL import Image
from torch import nn

import remind  # noqa: F401  (torchvision compatibility)
import torchvision
from remind.feature_store import (UnreadableImage, UnreadableImages, collate_images, read_rgb,
                                  write_feature_store)
from vqa_experiments.preprocess import clevr, tdiuc
from vqa_experiments.vqa_data import VQADataError

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
LAYERS = ("layer1", "layer2", "layer3", "layer4")
READERS = {"clevr": clevr, "tdiuc": tdiuc}
DEFAULTS = {
    # arch, layer, normalisation std (TDIUC keeps the reference's blue-channel typo 0.224)
    "clevr": ("resnet101", "layer3", (0.229, 0.224, 0.225)),
    "tdiuc": ("resnet152", "layer4", (0.229, 0.224, 0.224)),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# This family's wording of remind.feature_store's unreadable-image error (never skipped here:
# every image needs its features).
UNREADABLE_MESSAGE = "{path}: cannot read the image ({reason})"


def list_images(dataset, root):
    """``(image_root, [(relative path, iid)])``: train images then val images, each sorted."""
    reader = READERS[dataset]
    image_root, dirs = reader.image_dirs(root)
    items = []
    for split, folder in dirs:
        path = os.path.join(image_root, folder)
        if not os.path.isdir(path):
            raise VQADataError(f"image folder not found: {path}")
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise VQADataError(f"no images in {path}")
        items += [(f"{folder}/{n}", reader.image_iid(split, n)) for n in names]
    iids = [i for _, i in items]
    if len(set(iids)) != len(iids):
        raise VQADataError(f"{image_root}: two image files map to the same image id")
    return image_root, items


def build_backbone(arch, layer, weights="none", seed=0):
    """A frozen ResNet trunk (conv1 ... ``layer``) in eval mode.

    ``weights``: ``none`` (seeded random init), ``imagenet`` (torchvision's IMAGENET1K_V1,
    downloaded on first use) or a checkpoint path holding a torchvision ResNet state_dict.
    """
    if arch not in ARCHS:
        raise VQADataError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if layer not in LAYERS:
        raise VQADataError(f"--layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    if weights == "imagenet":
        try:
            model = torchvision.models.get_model(arch, weights="IMAGENET1K_V1")
        except (OSError, RuntimeError) as err:  # no network, or a broken download
            raise VQADataError(f"cannot get the ImageNet weights of {arch} "
                               f"({str(err).splitlines()[0]}); pass --weights PATH") from None
    else:
        torch.manual_seed(seed)
        model = torchvision.models.get_model(arch, weights=None)
        if weights != "none":
            _load_trunk_weights(model, weights, layer)
    trunk = resnet_trunk(model, layer)
    trunk.eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk


def resnet_trunk(model, layer):
    """conv1 ... ``layer`` of a torchvision ResNet as a Sequential with torchvision's names."""
    names = ["conv1", "bn1", "relu", "maxpool"] + list(LAYERS[:LAYERS.index(layer) + 1])
    return nn.Sequential(collections.OrderedDict((n, getattr(model, n)) for n in names))


def _load_trunk_weights(model, path, layer):
    from remind.networks import NetworkError, read_state_dict

    if not os.path.isfile(path):
        raise VQADataError(f"--weights file not found: {path} (or use 'none' / 'imagenet')")
    try:
        state = read_state_dict(path)
    except (NetworkError, OSError, RuntimeError) as err:
        raise VQADataError(f"{path}: cannot read a ResNet state_dict ({str(err).splitlines()[0]})") from None
    kept = ("conv1.", "bn1.") + tuple(f"{name}." for name in LAYERS[:LAYERS.index(layer) + 1])
    own = {k: v for k, v in model.state_dict().items() if k.startswith(kept)}
    for name, tensor in own.items():
        if name not in state:
            raise VQADataError(f"{path}: missing tensor {name!r} for {layer} of this --arch")
        if state[name].shape != tensor.shape:
            raise VQADataError(f"{path}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                               f"the model expects {tuple(tensor.shape)} (wrong --arch?)")
    model.load_state_dict({k: state[k] for k in own}, strict=False)


class ImageFiles(torch.utils.data.Dataset):
    """RGB, bicubic resize to ``size`` x ``size``, ``(x/255 - mean) / std`` in float64 -> float32.

    Items are ``(image or UnreadableImage marker, {"iids": id, "image_names": relative path})``,
    for ``remind.feature_store.collate_images``: an unreadable image comes back as a marker, so
    that the main process reports it in one line (exceptions from worker processes carry
    tracebacks).
    """

    def __init__(self, image_root, items, size, mean, std):
        self.image_root, self.items, self.size = image_root, items, size
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        rel, iid = self.items[i]
        columns = {"iids": iid, "image_names": rel}
        img = read_rgb(os.path.join(self.image_root, rel))
        if isinstance(img, UnreadableImage):
            return img, columns
        img = img.resize((self.size, self.size), Image.BICUBIC)
        x = (np.asarray(img, dtype=np.float64) / 255.0 - self.mean) / self.std
        return torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1).copy()), columns


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def extract_features(dataset, data_root, output, arch=None, layer=None, image_size=224,
                     weights="none", mean=IMAGENET_MEAN, std=None, batch_size=64, num_workers=2,
                     device=None, seed=0, progress=True):
    """Write the features h5 for every image of ``dataset``; returns ``(N, H, W, C)``.

    The file is a ``remind.feature_store`` store in the NHWC layout with the columns ``iids``
    and ``image_names``; an unreadable image stops the run (every image needs its features).
    ``progress``: True, False or None (on for a terminal).
    """
    d_arch, d_layer, d_std = DEFAULTS[dataset]
    arch, layer, std = arch or d_arch, layer or d_layer, tuple(std or d_std)
    if image_size < 32:
        raise VQADataError(f"--image_size must be at least 32, got {image_size}")
    image_root, items = list_images(dataset, data_root)
    device = torch.device(device or default_device())
    trunk = build_backbone(arch, layer, weights, seed)
    loader = torch.utils.data.DataLoader(
        ImageFiles(image_root, items, image_size, mean, std), batch_size=batch_size,
        shuffle=False, num_workers=num_workers, collate_fn=collate_images)
    attrs = {"dataset": dataset, "arch": arch, "layer": layer, "image_size": image_size,
             "weights": weights if weights in ("none", "imagenet") else os.path.basename(weights),
             "mean": np.asarray(mean, dtype=np.float64), "std": np.asarray(std, dtype=np.float64)}
    unreadable = UnreadableImages(skip=False, message=UNREADABLE_MESSAGE)
    return write_feature_store(trunk, loader, output, len(items), layout="NHWC", device=device,
                               channels_last=device.type == "cpu", unreadable=unreadable,
                               attrs=attrs, progress=progress, desc=f"{arch} {layer} features")
