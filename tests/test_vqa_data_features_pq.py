"""Feature extraction and PQ codes by command line, on generated CLEVR/TDIUC data."""
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

import vqa_fixtures as fx
from vqa_experiments.preprocess.features import build_backbone
from vqa_experiments.preprocess.pq_codes import fit_and_encode, pq_train_images
from vqa_experiments.stream_order import stream_boundaries, stream_order
from vqa_experiments.vqa_data import (dataset_files, decode_features, image_index_from_iids,
                                      load_codes, load_features, load_h5_attrs, load_pq,
                                      load_questions)


@pytest.fixture(scope="module")
def clevr_codes(tmp_path_factory):
    """CLEVR: ResNet-18 to layer3 at 224 (14x14 maps, as S-MAC needs), PQ for both orders."""
    root = fx.make_clevr(str(tmp_path_factory.mktemp("clevr")))
    fx.run_vqa_script("preprocess_clevr.py", "--data_root", root)
    fx.run_vqa_script("extract_image_features.py", "--dataset", "clevr", "--data_root", root,
               "--arch", "resnet18", "--layer", "layer3", "--weights", "none",
               "--num_workers", "0", "--device", "cpu", "--batch_size", "16")
    fx.run_vqa_script("fit_pq_and_encode.py", "--dataset", "clevr", "--data_dir", root,
               "--device", "cpu", "--no_progress")
    return root


def test_clevr_features_layout(clevr_codes):
    feats, iids, names = load_features(dataset_files(clevr_codes, "clevr")["features"])
    assert feats.shape == (26, 14, 14, 256) and feats.dtype == np.float32
    assert names[0] == "train/CLEVR_train_000000.png" and isinstance(names[0], str)
    assert iids[:3].tolist() == [10, 11, 12] and iids[20] == 20  # int("2" + "0")
    attrs = load_h5_attrs(dataset_files(clevr_codes, "clevr")["features"])
    assert attrs["arch"] == "resnet18" and attrs["layer"] == "layer3"
    assert attrs["std"] == pytest.approx([0.229, 0.224, 0.225])


def test_clevr_codes_decode_to_the_features(clevr_codes):
    files = dataset_files(clevr_codes, "clevr", "iid")
    codes, index = load_codes(files["codes"])
    feats, iids, _ = load_features(files["features"])
    assert codes.shape == (26, 14, 14, 32) and codes.dtype == np.uint8
    assert index == {int(i): r for r, i in enumerate(iids)}
    pq = load_pq(files["pq"])
    rec = decode_features(pq, torch.from_numpy(codes[:4]))
    assert rec.shape == (4, 196, 256) and rec.dtype == torch.float32
    assert torch.equal(rec, pq.decode(torch.from_numpy(codes[:4])).reshape(4, 196, 256))
    x = torch.from_numpy(feats[:4]).reshape(4, 196, 256)
    assert ((rec - x) ** 2).sum() / (x ** 2).sum() < 0.3
    attrs = load_h5_attrs(files["codes"])
    # reference iid choice: first 10% of the 20 train images = 2 images = 392 vectors
    assert attrs["num_train_images"] == 2 and attrs["num_train_vectors"] == 392
    assert attrs["pq_file"] == "pq_clevr_iid.npz" and attrs["feature_shape"] == [14, 14, 256]
    q_attrs = load_h5_attrs(dataset_files(clevr_codes, "clevr", "qtype")["codes"])
    assert q_attrs["order"] == "qtype" and q_attrs["num_train_images"] == 20


def test_features_file_is_a_core_feature_store_and_older_files_still_encode(clevr_codes, tmp_path):
    """Files from before the core's feature store (no layout attributes) give the same codes."""
    files = dataset_files(clevr_codes, "clevr")
    attrs = load_h5_attrs(files["features"])
    assert attrs["layout"] == "NHWC" and attrs["skipped_unreadable"] == 0
    for name in ("train_clevr.h5", "val_clevr.h5", "features_clevr.h5"):
        shutil.copy(os.path.join(clevr_codes, name), tmp_path / name)
    with h5py.File(tmp_path / "features_clevr.h5", "a") as f:
        del f.attrs["layout"], f.attrs["skipped_unreadable"]
    fit_and_encode("clevr", str(tmp_path), ["iid"], device="cpu", progress=False)
    new, _ = load_codes(dataset_files(str(tmp_path), "clevr", "iid")["codes"])
    old, _ = load_codes(dataset_files(clevr_codes, "clevr", "iid")["codes"])
    np.testing.assert_array_equal(new, old)


def test_pq_training_sets():
    """The reference's per-order choice and the base-init option, on a hand-made table."""
    n = 40
    train = {"iid": np.arange(n) % 20 + 100, "qtypeidx": np.asarray([0, 1, 1, 2] * 10),
             "aidx": np.zeros(n, dtype=np.int32)}
    index = image_index_from_iids(np.arange(100, 125)[::-1])  # rows in reverse id order
    rows_iid = pq_train_images(train, index, "iid", "reference", 28)
    assert rows_iid.tolist() == [5, 6]  # first 10% of the sorted distinct rows 5..24
    rows_q = pq_train_images(train, index, "qtype", "reference", 28)
    assert rows_q.tolist() == sorted({index[100 + (k % 20)] for k in range(0, n, 4)})
    base = pq_train_images(train, index, "iid", "base_init", 28)
    perm = stream_order(train["qtypeidx"], "iid")
    first = stream_boundaries(train["qtypeidx"][perm], "iid")[0]
    assert base.tolist() == sorted({index[int(train["iid"][i])] for i in perm[:first]})


def test_tdiuc_default_backbone_and_base_init_pq(tmp_path):
    root = fx.make_tdiuc(str(tmp_path))
    fx.run_vqa_script("preprocess_tdiuc.py", "--data_root", root)
    # The reference's ResNet-152 to layer4, at a tiny input size: 2048 channels.
    fx.run_vqa_script("extract_image_features.py", "--dataset", "tdiuc", "--data_root", root,
               "--weights", "none", "--image_size", "64", "--num_workers", "0",
               "--device", "cpu", "--no_progress", "--output", tmp_path / "r152.h5")
    feats, iids, names = load_features(str(tmp_path / "r152.h5"))
    assert feats.shape == (72, 2, 2, 2048)
    assert names[0] == "train2014/COCO_train2014_000000000009.jpg" and iids[0] == 9
    assert load_h5_attrs(str(tmp_path / "r152.h5"))["std"] == pytest.approx([0.229, 0.224, 0.224])
    # A smaller backbone from a state_dict file, as the demo does; then PQ on base-init images.
    weights = tmp_path / "r18.pt"
    torch.manual_seed(3)
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    fx.run_vqa_script("extract_image_features.py", "--dataset", "tdiuc", "--data_root", root,
               "--arch", "resnet18", "--weights", weights, "--num_workers", "0",
               "--device", "cpu", "--no_progress")
    files = dataset_files(root, "tdiuc", "qtype")
    feats, _, _ = load_features(files["features"])
    assert feats.shape == (72, 7, 7, 512)
    trunk = build_backbone("resnet18", "layer4", str(weights))
    from PIL import Image
    img = Image.open(os.path.join(root, "Images", names[0])).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = (np.asarray(img, dtype=np.float64) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.224]
    with torch.no_grad():
        ref = trunk(torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1)[None].copy()))
    assert np.allclose(feats[0], ref[0].permute(1, 2, 0).numpy(), atol=1e-4)
    fx.run_vqa_script("fit_pq_and_encode.py", "--dataset", "tdiuc", "--data_dir", root, "--order",
               "qtype", "--pq_train_set", "base_init", "--device", "cpu", "--no_progress")
    codes, index = load_codes(files["codes"])
    assert codes.shape == (72, 7, 7, 32)
    train = load_questions(files["train"], ["iid", "qtypeidx"])
    attrs = load_h5_attrs(files["codes"])
    # base init of qtype = the first streamed type block (sport_recognition, qtypeidx 7)
    first_type = stream_order(train["qtypeidx"], "qtype")[0]
    assert train["qtypeidx"][first_type] == 7
    expected = len(set(train["iid"][train["qtypeidx"] == 7].tolist()))
    assert attrs["pq_train_set"] == "base_init" and attrs["num_train_images"] == expected
    assert all(int(i) in index for i in train["iid"])
    assert not os.path.exists(dataset_files(root, "tdiuc", "iid")["codes"])
