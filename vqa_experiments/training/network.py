"""The plastic network of a run: the model (seeded init), its word embedding and the optimizer."""
import os

import torch

from vqa_experiments.models import build_model
from vqa_experiments.training.config import TrainerError
from vqa_experiments.vqa_data import embedding_rows_for, load_embedding_init


def _init_embedding(emb, cfg, data, seed):
    """Initialise the word rows as the config says; returns what was used (for results.json)."""
    kind = cfg["embedding_init"]
    if kind == "file":
        path = data.files["embedding"]
        matrix, padded = embedding_rows_for(load_embedding_init(path), data.dictionary, path)
        if matrix.shape[1] != emb.emb_dim:
            raise TrainerError(f"{path}: embedding width {matrix.shape[1]} differs from "
                               f"model_args.emb_dim {emb.emb_dim} (use embedding_init 'normal')")
        emb.init_rows(matrix)
        return {"kind": "file", "path": os.path.abspath(path), "shape": [len(matrix) - padded, matrix.shape[1]],
                "unk_row": "zeros (added: the file has no <unk> row)" if padded else "from the file"}
    if kind == "normal":
        emb.init_normal(cfg["embedding_init_std"], torch.Generator().manual_seed(seed))
        return {"kind": "normal", "std": cfg["embedding_init_std"], "seed": seed}
    return {"kind": "default", "note": "PyTorch's N(0, 1) init of nn.Embedding"}


def build_network(cfg, data, seed, device):
    """A fresh model on ``device`` from torch's global RNG seeded with ``seed`` (so every fresh
    model of a run, e.g. one per prefix with --full, starts alike); returns (model, frozen,
    embedding init: what ``_init_embedding`` says)."""
    torch.manual_seed(seed)
    args = dict(cfg["model_args"] or {})
    if "cnn_feat_size" in args and args.pop("cnn_feat_size") != data.feat_dim:
        raise TrainerError(f"config: model_args.cnn_feat_size differs from the feature size {data.feat_dim} "
                           f"of {data.files['pq']}")
    try:
        model = build_model(cfg["model"], data.dictionary.ntoken, data.num_classes, data.feat_dim, **args)
    except ValueError as err:
        raise TrainerError(f"config: {err}") from None
    embedding = _init_embedding(model.embedding, cfg, data, seed)
    freeze = cfg["freeze_embedding"]
    if freeze is None:
        freeze = type(model).freeze_embedding_by_default
    for p in model.embedding.parameters():
        p.requires_grad_(not freeze)
    return model.to(device), freeze, embedding


def make_optimizer(model, lr):
    """Adamax with the reference's defaults (betas 0.9/0.999, eps 1e-8, no weight decay) at a
    constant rate; the multi-tensor implementation is the same update, faster for small models."""
    return torch.optim.Adamax([p for p in model.parameters() if p.requires_grad], lr=lr, foreach=True)
