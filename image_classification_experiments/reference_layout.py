"""The stream's output files in the reference's label space, so analysis code written for the
reference code reads them unchanged.

The reference used the class order only to choose the samples of the base init and of each
increment; the targets it trained on and predicted are ImageFolder's alphabetical class indices
(index j: the j-th sorted class folder). So in its files the fc rows, the columns of
``preds_*.pth`` and the targets are alphabetical indices, and the rows of ``preds_*.pth`` are the
val images of the seen classes in ImageFolder order (ascending sample index), saved with
``torch.save`` of a float32 numpy array. This project streams in class-order labels (label k: the
k-th class of the class order; the fc rows of its checkpoints), with the evaluation rows grouped
by the classes added at each point; ``ReferenceSpace`` maps a point's outputs to the reference's
space and keeps ours beside them (``preds_*_ordered.pt``).

Reading a reference-layout preds file: on PyTorch >= 2.6 ``torch.load`` defaults to
``weights_only=True``, which refuses numpy arrays (the reference's own files too); pass
``weights_only=False`` for a file you trust, or use ``load_reference_preds`` here, which allows
numpy's array reconstruction and nothing else.
"""
import numpy as np
import torch

FC = ("fc.weight", "fc.bias")


class ReferenceSpace:
    """The run's classes in both label spaces: ``class_order[k]`` (the first ``num_classes`` of
    the label files' ``label_classes``) is our label and fc row k, its column in the reference's
    files is ``columns[k]`` (its index among the sorted ``class_folders``).

    ``width``: the reference's fc size, ``num_classes`` (its ``--num_classes``), widened to cover
    every column when the first ``num_classes`` classes of the class order are not the first
    ``num_classes`` folders; a column of a class the fc does not have holds zeros."""

    def __init__(self, class_order, class_folders, num_classes):
        self.label_classes = [str(c) for c in class_order]  # every class of the label files
        self.class_order = self.label_classes[:num_classes]
        self.class_folders = [str(c) for c in class_folders]
        index = {c: j for j, c in enumerate(self.class_folders)}
        self.columns = torch.tensor([index[c] for c in self.class_order], dtype=torch.long)
        self.width = max(num_classes, int(self.columns.max()) + 1 if len(self.columns) else 0)

    def to_reference(self, rows):
        """[K, ...] in class order (our fc rows, probability columns transposed) -> [width, ...]."""
        out = rows.new_zeros((self.width, *rows.shape[1:]))
        out[self.columns] = rows
        return out

    def preds_files(self, preds):
        """{file suffix: object} of a point's predictions (``preds``: "probs" [N, K] in class order,
        "targets" class-order labels and "sample_indices" of the N val images): ``.pth`` the
        reference's float32 array [N, width], rows in ImageFolder order; ``_ordered.pt`` ours."""
        probs = preds["probs"].cpu()
        order = torch.argsort(preds["sample_indices"].cpu(), stable=True)
        reference = self.to_reference(probs[order].t()).t().contiguous().numpy()
        ours = {"probs": probs, "targets": preds["targets"].cpu(), "sample_indices": preds["sample_indices"].cpu(),
                "class_order": list(self.class_order), "class_folders": list(self.class_folders),
                "label_space": "class_order"}
        return {".pth": reference, "_ordered.pt": ours}

    def reference_f(self, f, optimizer):
        """The reference's entries of an F file: ``model_state_dict`` (F's tensors under the names
        of the reference's ResNet18_StartAt_* modules, ``model.`` + torchvision's, as written by the
        PyTorch it was made for; fc rows in alphabetical order) and ``optimizer_state_dict`` (the
        SGD state, fc momentum rows moved alike)."""
        state = {f"model.{k}": self.to_reference(v) if k in FC else v for k, v in f.state_dict().items()}
        fc_ids = {i for i, (name, _) in enumerate(f.named_parameters()) if name in FC}
        opt = optimizer.state_dict()
        moved = {i: ({**s, "momentum_buffer": self.to_reference(s["momentum_buffer"])}
                     if i in fc_ids and torch.is_tensor(s.get("momentum_buffer")) else s)
                 for i, s in opt["state"].items()}
        return {"model_state_dict": state, "optimizer_state_dict": {**opt, "state": moved}}


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy >= 2
    except ImportError:  # pragma: no cover
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def load_reference_preds(path):
    """A reference-layout ``preds_*.pth`` (``torch.save`` of a numpy array) as that numpy array,
    loaded with ``weights_only=True`` and numpy's array reconstruction allowed (no other code)."""
    allowed = [_numpy_reconstruct(), np.ndarray, np.dtype, type(np.dtype(np.float32))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True)
