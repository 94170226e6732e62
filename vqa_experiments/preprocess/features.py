"""Frozen-CNN feature maps of every train and val image (DATA_FORMATS.md section 5).

The reference's G: a torchvision ResNet truncated after ``layer3`` (CLEVR, ResNet-101) or
``layer4`` (TDIUC, ResNet-152), images resized to 224x224 bicubic without crop, ImageNet
normalisation, eval mode. Any torchvision ResNet, cut point and input size can be chosen.
"""
import collections
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from tqdm import tqdm

import remind  # noqa: F401  (torchvision compatibility)
import torchvision
from vqa_experiments.preprocess import clevr, tdiuc
from vqa_experiments.preprocess.io import atomic_h5, put_strings, set_attrs
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

    An unreadable image yields an error message instead of a tensor, so that the main process
    can report it in one line (exceptions from worker processes carry tracebacks).
    """

    def __init__(self, image_root, rel_paths, size, mean, std):
        self.image_root, self.rel_paths, self.size = image_root, rel_paths, size
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    def __len__(self):
        return len(self.rel_paths)

    def __getitem__(self, i):
        path = os.path.join(self.image_root, self.rel_paths[i])
        try:
            with Image.open(path) as img:
                img = img.convert("RGB").resize((self.size, self.size), Image.BICUBIC)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            return None, f"{path}: cannot read the image ({err})"
        x = (np.asarray(img, dtype=np.float64) / 255.0 - self.mean) / self.std
        return torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1).copy()), None


def _collate(batch):
    for _, err in batch:
        if err is not None:
            return None, err
    return torch.stack([x for x, _ in batch]), None


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


@torch.no_grad()
def extract_features(dataset, data_root, output, arch=None, layer=None, image_size=224,
                     weights="none", mean=IMAGENET_MEAN, std=None, batch_size=64, num_workers=2,
                     device=None, seed=0, progress=True):
    """Write the features h5 for every image of ``dataset``; returns ``(N, H, W, C)``."""
    d_arch, d_layer, d_std = DEFAULTS[dataset]
    arch, layer, std = arch or d_arch, layer or d_layer, tuple(std or d_std)
    if image_size < 32:
        raise VQADataError(f"--image_size must be at least 32, got {image_size}")
    image_root, items = list_images(dataset, data_root)
    device = torch.device(device or default_device())
    trunk = build_backbone(arch, layer, weights, seed).to(device)
    if device.type == "cpu":
        trunk = trunk.to(memory_format=torch.channels_last)
    _, C, H, W = trunk(torch.zeros(1, 3, image_size, image_size, device=device)).shape
    loader = torch.utils.data.DataLoader(
        ImageFiles(image_root, [p for p, _ in items], image_size, mean, std),
        batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate)
    n = len(items)
    with atomic_h5(output) as f:
        feats = f.create_dataset("features", shape=(n, H, W, C), dtype=np.float32,
                                 chunks=(1, H, W, C))
        f.create_dataset("iids", data=np.asarray([i for _, i in items], dtype=np.int64))
        put_strings(f, "image_names", [p for p, _ in items])
        set_attrs(f, {"dataset": dataset, "arch": arch, "layer": layer, "image_size": image_size,
                      "weights": weights if weights in ("none", "imagenet")
                      else os.path.basename(weights),
                      "mean": np.asarray(mean, dtype=np.float64),
                      "std": np.asarray(std, dtype=np.float64)})
        row = 0
        for x, err in tqdm(loader, desc=f"{arch} {layer} features", unit="batch",
                           disable=not progress):
            if err is not None:
                raise VQADataError(err)
            x = x.to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            out = trunk(x).permute(0, 2, 3, 1).float().cpu().numpy()
            feats[row:row + len(out)] = out
            row += len(out)
    return n, H, W, C
