"""ResNet-18 split into a frozen part G and a plastic part F at any block boundary.

Both parts keep torchvision's parameter names (``layer4.1.conv1.weight``...), so the plastic part
loads exactly the weights of the base network's own blocks. (The reference deleted blocks from an
``nn.Sequential``; recent PyTorch renumbers what is left, so its F loaded ``layer4.0``'s weights into
``layer4.1``.) The split is named by F's first block (``first_plastic_block``): ``layer4.1`` is the
paper's (G ends with ``layer4.0``, whose output is the latent tensor); ``fc`` leaves only the
classifier plastic. ``block_after`` maps the reference's feature layer name (``layer4.0``) to it.
"""
import collections
import sys
import warnings

import torch
from torch import nn

import remind  # noqa: F401  (torchvision compatibility)
import torchvision
from remind.errors import InputError

STEM = ["conv1", "bn1", "relu", "maxpool"]
BLOCKS = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
HEAD = ["avgpool", "fc"]
SPLIT_POINTS = BLOCKS + ["fc"]


class NetworkError(InputError, ValueError):
    """A bad split point or an incompatible checkpoint."""


class ResNetSegment(nn.Module):
    """A contiguous run of a torchvision ResNet's modules under their original names."""

    def __init__(self, named_modules):
        super().__init__()
        self._order = []
        for name, module in named_modules:
            parent, _, leaf = name.rpartition(".")
            owner = self
            if parent:
                if not hasattr(self, parent):
                    self.add_module(parent, nn.Sequential(collections.OrderedDict()))
                owner = getattr(self, parent)
            owner.add_module(leaf, module)
            self._order.append(name)

    def forward(self, x):
        for name in self._order:
            if name == "fc":
                x = torch.flatten(x, 1)
            x = self.get_submodule(name)(x)
        return x


def _module_sequence(model):
    seq = [(n, getattr(model, n)) for n in STEM]
    for name in BLOCKS:
        layer, idx = name.split(".")
        seq.append((name, getattr(model, layer)[int(idx)]))
    seq += [(n, getattr(model, n)) for n in HEAD]
    return seq


def block_after(last_frozen):
    """The first plastic block when G ends with ``last_frozen`` (e.g. 'layer4.0' -> 'layer4.1').

    Accepts the reference's 'model.layer4.0' spelling too.
    """
    name = last_frozen[len("model."):] if last_frozen.startswith("model.") else last_frozen
    if name not in BLOCKS:
        raise NetworkError(f"unknown feature layer {last_frozen!r}; expected one of {', '.join(BLOCKS)}")
    return SPLIT_POINTS[BLOCKS.index(name) + 1]


def split_resnet(model, first_plastic_block="layer4.1"):
    """(G, F) sharing the modules of ``model``; F starts at ``first_plastic_block``."""
    split = first_plastic_block
    if split not in SPLIT_POINTS:
        raise NetworkError(f"unknown split point {split!r}; expected one of {', '.join(SPLIT_POINTS)}")
    seq = _module_sequence(model)
    cut = [n for n, _ in seq].index("avgpool" if split == "fc" else split)
    return ResNetSegment(seq[:cut]), ResNetSegment(seq[cut:])


def read_state_dict(path, obj=None):
    """A torchvision-format state_dict from a checkpoint file (plain, {'state_dict': ...} or
    {'model_state': ...}), with DataParallel/DDP ``module.`` and ``model.`` prefixes removed.
    ``obj``: the file's already loaded content, if at hand."""
    from remind.checkpoint import load_checkpoint

    if obj is None:
        obj = load_checkpoint(path)
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise NetworkError(f"{path}: expected a state_dict of tensors (or {{'state_dict': ...}})")
    clean = {}
    for name, value in obj.items():
        while name.startswith(("module.", "model.")):
            name = name.split(".", 1)[1]
        clean[name] = value
    return clean


def load_resnet_weights(model, state_dict, source="checkpoint", allow_fc_resize=False):
    """Copy every tensor of a ResNet's state_dict into ``model``, checking names and shapes.

    With ``allow_fc_resize``, an fc of another number of classes is left at its random init, and
    that is said loudly (the reference skipped it silently and started F at chance accuracy).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    if missing:
        raise NetworkError(f"{source}: missing tensor {missing[0]!r}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = [k for k in state_dict if k not in own]  # e.g. a ResNet-34's blocks: another network
    if extra:
        raise NetworkError(f"{source}: tensor {extra[0]!r} is not in the model"
                           + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "") + "; another architecture?")
    loaded = {}
    for name, tensor in own.items():
        value = state_dict[name]
        if value.shape != tensor.shape:
            if name.startswith("fc.") and allow_fc_resize:
                continue
            raise NetworkError(f"{source}: tensor {name!r} has shape {tuple(value.shape)}, "
                               f"the model expects {tuple(tensor.shape)}")
        loaded[name] = value
    skipped_fc = [k for k in own if k not in loaded]
    if skipped_fc:
        msg = (f"WARNING: {source}: the fc layer has {state_dict['fc.weight'].shape[0]} outputs, the model "
               f"{own['fc.weight'].shape[0]}; fc starts from a RANDOM init (accuracy right after base "
               "init will be at chance)")
        warnings.warn(msg)
        print(msg, file=sys.stderr)
    model.load_state_dict(loaded, strict=False)
    return skipped_fc


def build_resnet18(num_classes=1000, checkpoint=None, allow_fc_resize=False):
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if checkpoint is not None:
        load_resnet_weights(model, read_state_dict(checkpoint), str(checkpoint), allow_fc_resize)
    return model


def build_resnet18_split(checkpoint=None, first_plastic_block="layer4.1", num_classes=1000,
                         allow_fc_resize=False):
    """(G, F): G frozen in eval mode with no gradients, F trainable, from one ResNet-18."""
    model = build_resnet18(num_classes, checkpoint, allow_fc_resize)
    g, f = split_resnet(model, first_plastic_block)
    freeze(g)
    return g, f


def freeze(module):
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


# ------------------------------------------------------------------------ label spaces
# Which class each fc row stands for. This project's base init trains rows in class order and
# records that order in its checkpoints; the reference trained on ImageFolder's alphabetical
# indices (its released checkpoint: an 'arch' entry, keys under 'model.'), so its rows follow the
# sorted class folders.
LABEL_SPACES = ("class_order", "alphabetical")


def read_checkpoint_labels(path):
    """(state_dict, row_classes or None, label space or None) of a base-network checkpoint."""
    from remind.checkpoint import load_checkpoint

    obj = load_checkpoint(path)
    if isinstance(obj, dict) and isinstance(obj.get("class_order"), (list, tuple)):
        return read_state_dict(path, obj), [str(c) for c in obj["class_order"]], "class_order"
    if isinstance(obj, dict) and "arch" in obj and isinstance(obj.get("state_dict"), dict) and any(
            k.split(".", 1)[0] in ("model", "module") for k in obj["state_dict"]):
        return read_state_dict(path, obj), None, "alphabetical"
    return read_state_dict(path, obj), None, None


def fc_row_classes(path, fc_rows, recorded_rows, label_space, class_order, class_folders):
    """The class (folder name) of each fc row, from the checkpoint's label space.

    ``class_order``: the run's classes in label order; ``class_folders``: all class folders sorted
    (ImageFolder's order). A checkpoint that does not say its label space is accepted only where
    both readings agree (the class order is the sorted folder order)."""
    if label_space is None:
        if list(class_order[:fc_rows]) == list(class_folders[:fc_rows]):
            return list(class_order[:fc_rows])
        raise NetworkError(f"{path}: the checkpoint does not say which class each of its {fc_rows} fc rows is; "
                           "pass --ckpt_label_space class_order (rows follow the class order, as this "
                           "project's base init trains them) or alphabetical (sorted class folders, as the "
                           "reference's checkpoints)")
    if label_space not in LABEL_SPACES:
        raise NetworkError(f"unknown label space {label_space!r}; expected one of {', '.join(LABEL_SPACES)}")
    rows = recorded_rows if recorded_rows is not None else (
        list(class_order) if label_space == "class_order" else list(class_folders))
    if label_space == "class_order" and len(rows) < fc_rows:
        # A wider fc than the class order (e.g. the reference's 1000-way fc trained on a
        # 100-class tree): the rows past the order were never any class's.
        rows = list(rows) + [None] * (fc_rows - len(rows))
    if len(rows) < fc_rows:
        raise NetworkError(f"{path}: the fc has {fc_rows} rows but the {label_space} label space names "
                           f"only {len(rows)} classes")
    return list(rows[:fc_rows])


def align_fc_rows(state_dict, row_classes, run_classes, source="checkpoint"):
    """A copy of ``state_dict`` whose fc rows are ``run_classes``, taken by class name."""
    index = {c: i for i, c in enumerate(row_classes)}
    missing = [c for c in run_classes if c not in index]
    if missing:
        raise NetworkError(f"{source}: the fc has no row for class {missing[0]!r}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                           + "; pass --allow_fc_resize to start the fc from a random init")
    rows = torch.tensor([index[c] for c in run_classes], dtype=torch.long)
    out = dict(state_dict)
    out["fc.weight"] = state_dict["fc.weight"].index_select(0, rows)
    out["fc.bias"] = state_dict["fc.bias"].index_select(0, rows)
    return out


def load_base_network(path, class_order, class_folders, num_classes=None, label_space=None,
                      allow_fc_resize=False, log=print):
    """A ResNet-18 with a ``num_classes``-way fc whose row k is the class ``class_order[k]``.

    ``label_space`` (None: from the checkpoint) says how the checkpoint's rows are ordered; the
    rows are then picked by class name, so a reference checkpoint (alphabetical rows) and one of
    ours (class-order rows) give the same network for the same weights."""
    num_classes = num_classes or len(class_order)
    run_classes = list(class_order[:num_classes])
    state, recorded, recorded_space = read_checkpoint_labels(path)
    if label_space is not None and recorded_space is not None and label_space != recorded_space:
        raise NetworkError(f"{path}: --ckpt_label_space {label_space}, but the checkpoint's rows are in "
                           f"{recorded_space} order")
    space = label_space or recorded_space
    fc_rows = state["fc.weight"].shape[0] if "fc.weight" in state else 0
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    try:
        rows = fc_row_classes(path, fc_rows, recorded, space, class_order, class_folders)
        state = align_fc_rows(state, rows, run_classes, str(path))
    except NetworkError:
        if not allow_fc_resize:
            raise
        load_resnet_weights(model, state, str(path), allow_fc_resize=True)
        return model
    load_resnet_weights(model, state, str(path))
    if rows[:num_classes] != run_classes:
        log(f"{path}: fc rows mapped from {space or 'class_order'} order to the class order")
    elif fc_rows > num_classes:
        log(f"{path}: kept the first {num_classes} of the fc's {fc_rows} rows (they are the first classes "
            "of the class order)")
    return model
