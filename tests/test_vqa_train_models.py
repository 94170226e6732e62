"""S-MAC and UpDown: exact parameter counts at the reference sizes, shapes, batch-order invariance."""

import pytest
import torch

from vqa_experiments.models import SMAC, UpDown, build_model, count_parameters


def test_s_mac_reference_parameter_count():
    torch.manual_seed(0)
    model = build_model("s_mac", ntoken=87, num_classes=28, cnn_feat_size=1024)
    assert count_parameters(model) == 19_115_836
    # By part: embedding 26,400; input unit 11,200,512; MAC unit 7,087,616; output 801,308.
    assert sum(p.numel() for p in model.embedding.parameters()) == 26_400
    input_unit = [model.conv, model.kb_proj, model.lstm, model.lstm_proj]
    assert sum(p.numel() for m in input_unit for p in m.parameters()) == 11_200_512
    assert sum(p.numel() for p in model.mac.parameters()) == 7_087_616
    assert sum(p.numel() for p in model.classifier.parameters()) == 801_308


def test_updown_reference_parameter_count():
    torch.manual_seed(0)
    model = build_model("updown", ntoken=9318, num_classes=1480, cnn_feat_size=2048)
    assert count_parameters(model) == 25_945_726


def _tiny_batch(ntoken, L, B, S, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    ql = torch.randint(1, L, (B,), generator=g)
    q = torch.full((B, L), ntoken, dtype=torch.int64)
    for i in range(B):
        q[i, :ql[i]] = torch.randint(0, ntoken, (int(ql[i]),), generator=g)
    v = torch.randn(B, S, C, generator=g)
    return q, v, ql


@pytest.mark.parametrize("name,kwargs,S,C", [
    ("s_mac", dict(emb_dim=8, dim=16, max_step=3), 16, 12),
    ("updown", dict(emb_dim=8, lstm_out=16, num_hidden=8, attention_hidden=8), 5, 12),
])
def test_batch_order_does_not_matter(name, kwargs, S, C):
    """Packing with enforce_sorted=False: a batch in any length order gives the same logits per sample.
    (S-MAC's control attention also sees the padded positions up to the batch's longest question, as
    in the reference, so a sample's logits depend on that length; UpDown's do not.)"""
    torch.manual_seed(0)
    model = build_model(name, ntoken=20, num_classes=7, cnn_feat_size=C, **kwargs).eval()
    q, v, ql = _tiny_batch(20, 10, 6, S, C)
    with torch.no_grad():
        out = model(q, v, ql)
        assert out.shape == (6, 7)
        perm = torch.tensor([3, 0, 5, 1, 4, 2])
        permuted = model(q[perm], v[perm], ql[perm])
        assert torch.allclose(out[perm], permuted, atol=1e-5)
        if name == "updown":
            single = torch.cat([model(q[i:i + 1], v[i:i + 1], ql[i:i + 1]) for i in range(6)])
            assert torch.allclose(out, single, atol=1e-5)


def test_train_mode_dropout_and_gradients():
    torch.manual_seed(0)
    model = SMAC(ntoken=20, num_classes=5, emb_dim=8, dim=16, max_step=2, cnn_feat_size=12)
    q, v, ql = _tiny_batch(20, 10, 4, 9, 12)
    model.train()
    a, b = model(q, v, ql), model(q, v, ql)
    assert not torch.allclose(a, b)  # variational dropout masks are drawn per forward
    a.sum().backward()
    assert model.mac.control.pos_aware[0].weight.grad is not None
    up = UpDown(ntoken=20, num_classes=5, emb_dim=8, lstm_out=8, num_hidden=8, attention_hidden=8, cnn_feat_size=12)
    assert up.embedding is up.ques_encoder.embedding


def test_bad_feature_shape_is_reported():
    model = SMAC(ntoken=20, num_classes=5, emb_dim=8, dim=16, max_step=1, cnn_feat_size=12)
    q, v, ql = _tiny_batch(20, 10, 2, 10, 12)  # 10 locations: not a square grid
    with pytest.raises(ValueError, match="S-MAC expects"):
        model(q, v, ql)
