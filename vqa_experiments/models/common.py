"""Pieces shared by the two VQA models: the word embedding and packed (Bi)LSTM helpers."""
import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence


class WordEmbedding(nn.Module):
    """``Embedding(ntoken + 1, emb_dim)``; row ``ntoken`` is the padding token (never read by the
    packed LSTM). Optional dropout (p=0.5) after the lookup, as the reference's ``WordEmbedding``."""

    def __init__(self, ntoken, emb_dim, dropout=False):
        super().__init__()
        self.ntoken, self.emb_dim = int(ntoken), int(emb_dim)
        self.emb = nn.Embedding(self.ntoken + 1, self.emb_dim)
        self.dropout = nn.Dropout(0.5)
        self.use_dropout = bool(dropout)

    def init_rows(self, matrix):
        """Copy a (ntoken, emb_dim) matrix (e.g. GloVe rows) into rows 0..ntoken-1."""
        matrix = torch.as_tensor(np.asarray(matrix), dtype=torch.float32)
        if tuple(matrix.shape) != (self.ntoken, self.emb_dim):
            raise ValueError(f"embedding matrix has shape {tuple(matrix.shape)}, "
                             f"expected ({self.ntoken}, {self.emb_dim})")
        with torch.no_grad():
            self.emb.weight[:self.ntoken] = matrix

    def init_normal(self, std, generator=None):
        """Fill rows 0..ntoken-1 with N(0, std^2) (the offline stand-in for GloVe)."""
        with torch.no_grad():
            rows = torch.randn(self.ntoken, self.emb_dim, generator=generator) * float(std)
            self.emb.weight[:self.ntoken] = rows

    def forward(self, q):
        e = self.emb(q)
        return self.dropout(e) if self.use_dropout else e


def pack(embedded, lengths):
    """Pack a batch-first padded sequence. Lengths go to the CPU as int64 (modern PyTorch needs
    that); the batch need not be sorted (the reference sorted every batch by length instead)."""
    lengths = torch.as_tensor(lengths).to("cpu", torch.int64)
    return pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)


def xavier_linear(in_dim, out_dim, bias=True):
    """The MAC ``linear()`` helper: xavier-uniform weight, zero bias."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def count_parameters(model, trainable_only=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
