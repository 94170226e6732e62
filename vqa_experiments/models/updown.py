"""The UpDown-style two-glimpse attention model REMIND trains on TDIUC (reference
``vqa_models.UpDown`` with ``attn_type='old'``).

At the reference sizes (9,318 tokens, 300-d trainable embedding with dropout, BiLSTM 512, 2048-d
features, 2 glimpses, hidden 2 x 1024, 1480 answers) it has 25,945,726 parameters. PyTorch default
initialisation everywhere. Image features are expected already L2-normalised per location (the
trainer does that after PQ decoding, ``imnorm``).
"""
import torch
import torch.nn as nn

from vqa_experiments.models.common import WordEmbedding, pack


class QuestionEncoder(nn.Module):
    def __init__(self, ntoken, emb_dim, lstm_out, bidirectional, embedding_dropout):
        super().__init__()
        self.embedding = WordEmbedding(ntoken, emb_dim, embedding_dropout)
        self.lstm = nn.LSTM(input_size=emb_dim, hidden_size=lstm_out, num_layers=1, batch_first=True,
                            bidirectional=bidirectional)

    def forward(self, q, ql):
        _, (h, _) = self.lstm(pack(self.embedding(q), ql))
        return h.transpose(0, 1).reshape(q.size(0), -1)                         # [B, dirs * lstm_out]


class Attention(nn.Module):
    """One glimpse: ReLU(Linear([v_loc ; q])) -> dropout -> Linear(.,1) -> softmax over locations."""

    def __init__(self, imfeat_size, qfeat_size, hidden=1024, use_dropout=True):
        super().__init__()
        self.nlin = nn.Linear(imfeat_size + qfeat_size, hidden)
        self.attnmap = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(0.5)
        self.use_dropout = bool(use_dropout)

    def forward(self, qfeat, imfeat):
        qtile = qfeat.unsqueeze(1).expand(-1, imfeat.size(1), -1)
        h = torch.relu(self.nlin(torch.cat([imfeat, qtile], dim=2)))
        if self.use_dropout:
            h = self.dropout(h)
        return torch.softmax(self.attnmap(h), dim=1)                             # [B, L, 1]


class Classifier(nn.Module):
    def __init__(self, num_input, num_hidden, num_classes, use_dropout=True):
        super().__init__()
        self.lin1 = nn.Linear(num_input, num_hidden)
        self.classifier = nn.Linear(num_hidden, num_classes)
        self.dropout = nn.Dropout(0.5)
        self.use_dropout = bool(use_dropout)

    def forward(self, x):
        h = torch.relu(self.lin1(x))
        if self.use_dropout:
            h = self.dropout(h)
        return self.classifier(h)


class UpDown(nn.Module):
    """Inputs: ``q`` int64 [B, L], ``v`` float [B, locations, cnn_feat_size], ``ql`` int64 [B]."""

    freeze_embedding_by_default = False
    eval_depends_on_batch = False  # each question's prediction is its own

    def __init__(self, ntoken, num_classes, emb_dim=300, lstm_out=512, bidirectional=True,
                 cnn_feat_size=2048, num_hidden=1024, num_attn_hops=2, attention_hidden=1024,
                 embedding_dropout=True, attention_dropout=True, classifier_dropout=True):
        super().__init__()
        self.cnn_feat_size = int(cnn_feat_size)
        qfeat_dim = lstm_out * (2 if bidirectional else 1)
        self.ques_encoder = QuestionEncoder(ntoken, emb_dim, lstm_out, bidirectional, embedding_dropout)
        # The glimpses are independent: each sees the same question vector and the same features.
        self.attention = nn.ModuleList([Attention(self.cnn_feat_size, qfeat_dim, attention_hidden, attention_dropout)
                                        for _ in range(num_attn_hops)])
        self.classifier = Classifier(qfeat_dim + self.cnn_feat_size * num_attn_hops, num_hidden * 2,
                                     num_classes, classifier_dropout)

    @property
    def embedding(self):
        return self.ques_encoder.embedding

    def forward(self, q, v, ql):
        if v.dim() != 3 or v.size(2) != self.cnn_feat_size:
            raise ValueError(f"UpDown expects [B, locations, {self.cnn_feat_size}] features, got {tuple(v.shape)}")
        qfeat = self.ques_encoder(q, ql)
        glimpses = [(att(qfeat, v) * v).sum(1) for att in self.attention]
        return self.classifier(torch.cat([qfeat] + glimpses, dim=1))
