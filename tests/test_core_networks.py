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
