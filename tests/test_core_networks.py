import pytest
import torch

import remind  # noqa: F401
import torchvision
from remind.networks import (SPLIT_POINTS, NetworkError, block_after, build_resnet18,
                             build_resnet18_split, read_state_dict, split_resnet)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    return model


@pytest.mark.parametrize("split", SPLIT_POINTS)
def test_g_then_f_reproduces_the_unsplit_logits_exactly(resnet, split):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    g, f = split_resnet(resnet, split)
    with torch.no_grad():
        assert torch.equal(f(g(x)), resnet(x))
    # Parameter names stay torchvision's, so each part loads the base network's own blocks.
    names = set(g.state_dict()) | set(f.state_dict())
    assert names == set(resnet.state_dict())
    assert not set(g.state_dict()) & set(f.state_dict())


def test_paper_split_and_reference_names():
    assert block_after("layer4.0") == "layer4.1" and block_after("model.layer3.1") == "layer4.0"
    assert block_after("layer4.1") == "fc"
    g, f = build_resnet18_split(first_plastic_block="layer4.1", num_classes=10)
    assert any(k.startswith("layer4.1.") for k in f.state_dict())
    assert not any(k.startswith("layer4.1.") for k in g.state_dict())
    assert not g.training and not any(p.requires_grad for p in g.parameters())
    assert all(p.requires_grad for p in f.parameters())
    with torch.no_grad():
        assert g(torch.zeros(1, 3, 224, 224)).shape == (1, 512, 7, 7)
    with pytest.raises(NetworkError, match="unknown split point 'layer5.0'"):
        split_resnet(torchvision.models.resnet18(), "layer5.0")


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module_prefix", "model_prefix"])
def test_loads_torchvision_format_checkpoints(tmp_path, resnet, wrap):
    sd = resnet.state_dict()
    if wrap == "state_dict":
        obj = {"state_dict": sd, "epoch": 3}
    elif wrap == "module_prefix":
        obj = {"state_dict": {"module." + k: v for k, v in sd.items()}}
    elif wrap == "model_prefix":
        obj = {"model." + k: v for k, v in sd.items()}
    else:
        obj = sd
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    assert set(read_state_dict(path)) == set(sd)
    g, f = build_resnet18_split(path, "layer4.1", num_classes=7)
    f.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(f(g(x)), resnet(x))


def test_checkpoint_errors_name_the_tensor(tmp_path, resnet):
    sd = dict(resnet.state_dict())
    del sd["layer3.0.bn1.weight"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(NetworkError, match=r"missing\.pth: missing tensor 'layer3\.0\.bn1\.weight'"):
        build_resnet18(num_classes=7, checkpoint=tmp_path / "missing.pth")
    sd = dict(resnet.state_dict())
    sd["layer2.1.conv2.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(NetworkError, match=r"'layer2\.1\.conv2\.weight' has shape \(3, 3, 3, 3\)"):
        build_resnet18(num_classes=7, checkpoint=tmp_path / "shape.pth")
    torch.save({"state_dict": [1, 2]}, tmp_path / "odd.pth")
    with pytest.raises(NetworkError, match="odd.pth"):
        build_resnet18(checkpoint=tmp_path / "odd.pth")


def test_fc_resize_is_an_explicit_choice_and_said_loudly(tmp_path, resnet, capsys):
    torch.save(resnet.state_dict(), tmp_path / "seven.pth")
    with pytest.raises(NetworkError, match="fc.weight"):
        build_resnet18(num_classes=12, checkpoint=tmp_path / "seven.pth")
    with pytest.warns(UserWarning, match="RANDOM init"):
        model = build_resnet18(num_classes=12, checkpoint=tmp_path / "seven.pth", allow_fc_resize=True)
    assert model.fc.out_features == 12
    assert torch.equal(model.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    assert "RANDOM init" in capsys.readouterr().err


def _saved_in_both_layouts(tmp_path, folders, order):
    """One trained-looking network saved as the reference would (alphabetical rows, 'model.' keys,
    'arch') and as this project's base init (rows in class order, the order recorded)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=len(folders))  # rows: sorted folders
    ref = tmp_path / "reference.pth"
    torch.save({"arch": "ResNet18ClassifyAfterLayer4_1", "epoch": 40, "best_acc1": 50.0,
                "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, ref)
    rows = torch.tensor([folders.index(c) for c in order])
    ours_sd = dict(net.state_dict())
    ours_sd["fc.weight"], ours_sd["fc.bias"] = ours_sd["fc.weight"][rows], ours_sd["fc.bias"][rows]
    ours = tmp_path / "ours.pth"
    torch.save({"state_dict": ours_sd, "class_order": order}, ours)
    return net, ref, ours


def test_reference_and_own_layouts_give_the_same_network(tmp_path):
    from remind.networks import load_base_network

    folders = [f"n{i:08d}" for i in range(6)]
    order = [folders[i] for i in (3, 0, 5, 1, 4, 2)]
    net, ref, ours = _saved_in_both_layouts(tmp_path, folders, order)
    x = torch.randn(3, 3, 32, 32)
    net.eval()
    expected = net(x)[:, [folders.index(c) for c in order[:4]]]  # class-order columns, 4 classes
    for path in (ref, ours):
        model = load_base_network(path, order, folders, num_classes=4, log=lambda m: None).eval()
        assert torch.allclose(model(x), expected, atol=1e-6), path


def test_unknown_label_space_is_refused_unless_stated(tmp_path):
    from remind.networks import load_base_network

    folders = [f"n{i:08d}" for i in range(4)]
    order = [folders[i] for i in (2, 0, 3, 1)]
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=4)
    plain = tmp_path / "plain.pth"
    torch.save(net.state_dict(), plain)
    with pytest.raises(NetworkError, match="--ckpt_label_space"):
        load_base_network(plain, order, folders)
    # Stated: rows in class order -> loaded as is; alphabetical -> rows permuted to the order.
    m1 = load_base_network(plain, order, folders, label_space="class_order", log=lambda m: None)
    assert torch.equal(m1.fc.weight, net.fc.weight)
    m2 = load_base_network(plain, order, folders, label_space="alphabetical", log=lambda m: None)
    assert torch.equal(m2.fc.weight, net.fc.weight[[2, 0, 3, 1]])
    # The sorted order needs no statement: both readings agree.
    m3 = load_base_network(plain, folders, folders, log=lambda m: None)
    assert torch.equal(m3.fc.weight, net.fc.weight)


def test_larger_fc_keeps_the_first_rows_of_the_class_order(tmp_path):
    from remind.networks import load_base_network

    folders = [f"n{i:08d}" for i in range(6)]
    order = [folders[i] for i in (5, 4, 3, 2, 1, 0)]
    net, _, ours = _saved_in_both_layouts(tmp_path, folders, order)
    said = []
    model = load_base_network(ours, order, folders, num_classes=3, log=said.append)
    assert model.fc.weight.shape[0] == 3 and "kept the first 3" in said[0]
    assert torch.equal(model.fc.weight, net.fc.weight[[5, 4, 3]])
