"""S-MAC: the simplified MAC network (Marois et al. 2018) that REMIND trains on CLEVR.

Structure, sizes and initialisation follow the reference (``vqa_experiments/s_mac/*``). At the
reference sizes (87 tokens, 300-d embedding, d = 512,
12 steps, 1024-channel 14x14 maps, 28 answers) it has 19,115,836 parameters, 26,400 of them in the
frozen word embedding.

Deviations (none change the function computed): the batch need not be sorted by question length
(packing uses ``enforce_sorted=False`` with CPU lengths); the map grid may be any square number of
locations and the channel count is a parameter (the reference hard-coded 1024 x 14 x 14).
"""
import math

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pad_packed_sequence

from vqa_experiments.models.common import WordEmbedding, pack, xavier_linear


class ControlUnit(nn.Module):
    def __init__(self, dim, max_step):
        super().__init__()
        # One position-aware projection of the question vector per reasoning step.
        self.pos_aware = nn.ModuleList([xavier_linear(2 * dim, dim) for _ in range(max_step)])
        self.ctrl_question = xavier_linear(dim, dim)
        self.attn = xavier_linear(dim, 1, bias=False)

    def forward(self, step, context, question, control):
        cq = self.ctrl_question(control) + self.pos_aware[step](question)      # [B, d]
        logits = self.attn(cq.unsqueeze(1) * context)                           # [B, T, 1]
        # Softmax over every position, padded ones included (the reference has no mask).
        weights = torch.softmax(logits, dim=1)
        return (weights * context).sum(1)                                       # [B, d]


class ReadUnit(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.concat = xavier_linear(dim, dim)
        self.attn = xavier_linear(dim, 1, bias=False)

    def forward(self, memory, control, kb_proj):
        # kb_proj: [B, d, L]
        interactions = memory.unsqueeze(2) * kb_proj                            # [B, d, L]
        mixed = self.concat(interactions.transpose(1, 2)) + kb_proj.transpose(1, 2)  # [B, L, d]
        logits = self.attn(mixed * control.unsqueeze(1)).squeeze(2)             # [B, L]
        weights = torch.softmax(logits, dim=1).unsqueeze(1)                     # [B, 1, L]
        return (weights * kb_proj).sum(2)                                       # [B, d]


class WriteUnit(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = xavier_linear(dim, dim)

    def forward(self, read):
        return self.proj(read)


class MACUnit(nn.Module):
    """The recurrence over ``max_step`` S-MAC cells, with variational dropout on control and memory."""

    def __init__(self, dim, max_step=12, dropout=0.15):
        super().__init__()
        self.control = ControlUnit(dim, max_step)
        self.read = ReadUnit(dim)
        self.write = WriteUnit(dim)
        self.mem_0 = nn.Parameter(torch.zeros(1, dim))
        self.control_0 = nn.Parameter(torch.zeros(1, dim))
        self.dim, self.max_step, self.dropout = dim, max_step, float(dropout)

    def _mask(self, like):
        keep = 1.0 - self.dropout
        return torch.empty_like(like).bernoulli_(keep) / keep

    def forward(self, context, question, kb_proj):
        batch = question.size(0)
        control = self.control_0.expand(batch, self.dim)
        memory = self.mem_0.expand(batch, self.dim)
        if self.training:  # one pair of masks per forward pass, reused at every step
            control_mask, memory_mask = self._mask(control), self._mask(memory)
            control = control * control_mask
            memory = memory * memory_mask
        for step in range(self.max_step):
            control = self.control(step, context, question, control)
            if self.training:
                control = control * control_mask
            memory = self.write(self.read(memory, control, kb_proj))
            if self.training:
                memory = memory * memory_mask
        return memory


class SMAC(nn.Module):
    """Inputs: ``q`` int64 [B, L] token ids (padding = ntoken), ``v`` float [B, H*W, C] feature maps
    (channels last, locations row-major), ``ql`` int64 [B] question lengths. Returns logits [B, classes]."""

    freeze_embedding_by_default = True
    # The control unit's attention runs over all T positions of the padded batch (no mask), so a
    # question's prediction depends on the longest question evaluated with it.
    eval_depends_on_batch = True

    def __init__(self, ntoken, num_classes, emb_dim=300, dim=512, max_step=12, dropout=0.15,
                 cnn_feat_size=1024, embedding_dropout=False):
        super().__init__()
        self.dim, self.cnn_feat_size = int(dim), int(cnn_feat_size)
        self.embedding = WordEmbedding(ntoken, emb_dim, embedding_dropout)
        # Input unit: two 3x3 convolutions with ELU (kaiming-uniform weights, zero bias).
        self.conv = nn.Sequential(nn.Conv2d(self.cnn_feat_size, dim, 3, padding=1), nn.ELU(),
                                  nn.Conv2d(dim, dim, 3, padding=1), nn.ELU())
        for layer in (self.conv[0], self.conv[2]):
            nn.init.kaiming_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.kb_proj = xavier_linear(dim, dim)
        self.lstm = nn.LSTM(input_size=emb_dim, hidden_size=dim, num_layers=1, batch_first=True,
                            bidirectional=True)
        self.lstm_proj = nn.Linear(2 * dim, dim)  # PyTorch default init, as in the reference
        self.mac = MACUnit(dim, max_step, dropout)
        self.classifier = nn.Sequential(xavier_linear(3 * dim, dim), nn.ELU(), xavier_linear(dim, num_classes))
        nn.init.kaiming_uniform_(self.classifier[0].weight)

    def forward(self, q, v, ql):
        batch, locations, channels = v.shape
        side = math.isqrt(locations)
        if side * side != locations or channels != self.cnn_feat_size:
            raise ValueError(f"S-MAC expects [B, S*S, {self.cnn_feat_size}] features, got {tuple(v.shape)}")
        maps = v.transpose(1, 2).reshape(batch, channels, side, side)
        kb = self.conv(maps).reshape(batch, self.dim, -1)                       # [B, d, L]
        kb_proj = self.kb_proj(kb.transpose(1, 2)).transpose(1, 2)              # [B, d, L]
        packed = pack(self.embedding(q), ql)
        out, (h, _) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)                     # [B, T, 2d], T = max length
        context = self.lstm_proj(out)                                           # padded rows = bias
        question = h.transpose(0, 1).reshape(batch, -1)                         # [B, 2d] = [fwd; bwd]
        memory = self.mac(context, question, kb_proj)
        return self.classifier(torch.cat([memory, question], dim=1))
