"""Base initialization end to end on a tiny tree: training (1 process, resume, DDP with 2 gloo
processes), feature extraction, PQ fitting, the bash driver, and the clear errors. The bash driver
and torchrun run as processes; every other call runs a script's ``main`` in this process."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import ic_fixtures as icf
from image_classification_experiments import imagenet_folders as folders

ORDER = [icf.CLASSES[i] for i in (3, 1, 0, 2)]
CKPT = "ResNet18ClassifyAfterLayer4_1_3.pth"  # the bash driver's name: <MODEL>_<BASE_MAX_CLASS>.pth
TRAIN = ["--base_max_class", 3, "--num_classes", 4, "--batch_size", 10, "--num_workers", 0,
         "--image_size", 64, "--seed", 3, "--lr", 0.02, "--device", "cpu", "--ckpt_file", CKPT]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, make_imagenet_tree):
    """The whole base initialization by the bash driver, run from another directory.

    Label files, 2 training epochs, features and codes; the other tests check these outputs and
    reuse the tree, the label files and the checkpoint.
    """
    root = tmp_path_factory.mktemp("ic_base")
    data = make_imagenet_tree(root / "data", n_train=8, n_val=3, size=32)
    icf.write_order(root / "order.txt", ORDER)
    env = {"DATA_DIR": "data", "LABELS_DIR": "labels", "CLASS_ORDER": "order.txt",
           "SAVE_DIR": "out", "NPROC": "1", "BASE_MAX_CLASS": "3", "NUM_CLASSES": "4",
           "EPOCHS": "2", "BATCH_SIZE": "10", "IMAGE_SIZE": "64", "WORKERS": "0", "SEED": "3",
           "PYTHON": sys.executable, "TRAIN_ARGS": "--lr 0.02 --device cpu",
           "EXTRACT_ARGS": "--batch_size 7 --device cpu",
           "PQ_ARGS": "--num_codebooks 8 --codebook_size 16 --batch_size 5 --device cpu"}
    proc = subprocess.run(["bash", os.path.join(icf.SCRIPTS, "train_base_init_network.sh")],
                          cwd=root, capture_output=True, text=True, env=icf.script_env(env),
                          timeout=300)
    icf.assert_ok(proc)
    return {"root": root, "data": data, "labels": str(root / "labels"), "out": root / "out",
            "ckpt": root / "out" / f"best_{CKPT}", "driver": proc}


def train(ws, save_dir, *extra):
    return icf.run_main("train_base_init_network_from_scratch.py", "--data", ws["data"],
                        "--labels_dir", ws["labels"], "--save_dir", save_dir, *TRAIN, *extra)


def test_bash_driver_outputs(ws):
    out = ws["out"]
    for name in (f"best_{CKPT}", CKPT, "config.json", "results.json", "base_init_features.h5",
                 "pq.npz", "base_init_codes.h5", "ResNet18ClassifyAfterLayer4_1_3_from_scratch.log"):
        assert (out / name).is_file(), name
    for split in folders.SPLITS:
        assert os.path.isfile(os.path.join(ws["labels"], f"imagenet_{split}_labels.npy"))
    assert "epoch 2/2" in (out / "ResNet18ClassifyAfterLayer4_1_3_from_scratch.log").read_text()


def test_training_writes_checkpoints_and_results(ws):
    save = ws["out"]
    best = torch.load(save / f"best_{CKPT}", weights_only=True)
    from torchvision.models import resnet18

    resnet18(num_classes=4).load_state_dict(best["state_dict"])  # torchvision state_dict, strict
    assert best["class_order"] == ORDER and best["label_space"] == "class_order"  # fc row k: ORDER[k]
    last = torch.load(save / CKPT, weights_only=True)
    assert last["epoch"] == 2 and set(last) >= {"state_dict", "optimizer", "scheduler", "rng",
                                               "best_acc1", "history", "args"}
    results = json.loads((save / "results.json").read_text())
    assert len(results["history"]) == 2 and results["train_images"] == 24
    assert results["val_images"] == 9
    assert results["best_val_top1"] == max(h["val_top1"] for h in results["history"])
    assert json.loads((save / "config.json").read_text())["base_max_class"] == 3
    assert not [f for f in os.listdir(save) if f.startswith(".")]  # no temp files left


def test_resume_equals_an_uninterrupted_run(ws):
    save_b = ws["root"] / "run_b"
    icf.assert_ok(train(ws, save_b, "--epochs", 1))
    proc = train(ws, save_b, "--epochs", 2, "--resume", save_b)
    icf.assert_ok(proc)
    assert "resumed from" in proc.stdout and "epoch 1/2" not in proc.stdout
    a = torch.load(ws["out"] / CKPT, weights_only=True)
    b = torch.load(save_b / CKPT, weights_only=True)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["history"][-1]["val_top1"] == b["history"][-1]["val_top1"]


def test_resume_refuses_other_settings_and_reads_the_previous_layout(ws, tmp_path):
    """The run-defining settings must match; a last checkpoint of the previous version (no
    fingerprint: its settings are read from its arguments) continues like a current one."""
    import random

    from remind.checkpoint import load_checkpoint, save_checkpoint

    proc = train(ws, tmp_path / "other", "--epochs", 3, "--lr", 0.05, "--resume", ws["out"])
    icf.assert_clean_error(proc, CKPT, "other settings", "lr: 0.02 vs 0.05")
    last = load_checkpoint(ws["out"] / CKPT)
    old = {k: v for k, v in last.items() if k not in ("format_version", "fingerprint")}
    old["rng"] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    save_checkpoint(tmp_path / "old" / CKPT, old)
    icf.assert_ok(train(ws, tmp_path / "from_old", "--epochs", 3, "--resume", tmp_path / "old"))
    icf.assert_ok(train(ws, tmp_path / "from_new", "--epochs", 3, "--resume", ws["out"]))
    a = torch.load(tmp_path / "from_old" / CKPT, weights_only=True)
    b = torch.load(tmp_path / "from_new" / CKPT, weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


def test_evaluate_only(ws):
    proc = train(ws, ws["root"] / "eval", "--evaluate", "--resume", ws["ckpt"])
    icf.assert_ok(proc)
    results = json.loads((ws["out"] / "results.json").read_text())
    assert f"val top-1 {results['best_val_top1']:.2f}%" in proc.stdout


def test_ddp_two_gloo_processes(ws):
    save = ws["root"] / "run_ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(icf.SCRIPTS, "train_base_init_network_from_scratch.py"),
           "--data", ws["data"], "--labels_dir", ws["labels"], "--save_dir", save, "--epochs", 1,
           *TRAIN, "--batch_size", 4]  # 2 per process: val shards of 5 and 4 images, 3 vs 2 batches
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          env=icf.script_env(), timeout=300)
    icf.assert_ok(proc)
    assert "2 process(es) on cpu" in proc.stdout
    assert proc.stdout.count("epoch 1/1") == 1  # only rank 0 reports
    config = json.loads((save / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_size_per_process"] == 2
    last = torch.load(save / CKPT, weights_only=True)
    assert not any(k.startswith("module.") for k in last["state_dict"])
    assert json.loads((save / "results.json").read_text())["val_images"] == 9


def test_training_clear_errors(ws, tmp_path):
    # label file of the wrong length
    bad_labels = tmp_path / "labels"
    shutil.copytree(ws["labels"], bad_labels)
    arr = np.load(bad_labels / "imagenet_train_labels.npy")
    np.save(bad_labels / "imagenet_train_labels.npy", arr[:-2])
    proc = icf.run_main("train_base_init_network_from_scratch.py", "--data", ws["data"],
                        "--labels_dir", bad_labels, "--save_dir", tmp_path / "s", *TRAIN)
    icf.assert_clean_error(proc, "has 30 labels but the train folder has 32 images")
    # missing val folder
    data = tmp_path / "data"
    shutil.copytree(ws["data"], data)
    shutil.rmtree(data / "val")
    proc = icf.run_main("train_base_init_network_from_scratch.py", "--data", data,
                        "--labels_dir", ws["labels"], "--save_dir", tmp_path / "s", *TRAIN)
    icf.assert_clean_error(proc, "val folder not found", str(data / "val"))
    assert not (tmp_path / "s").exists()


def corrupt_copy(ws, dest):
    """The tree with one truncated PNG among the base classes; returns its path."""
    shutil.copytree(ws["data"], dest)
    cls = ORDER[1]
    victim = sorted((dest / "train" / cls).iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:60])
    return victim


def test_extract_features_format_and_values(ws):
    from remind.networks import build_resnet18_split

    from image_classification_experiments import imagenet_data as data

    out, ckpt = ws["out"], ws["ckpt"]
    with h5py.File(out / "base_init_features.h5", "r") as f:
        feats, labels, indices = f["features"][:], f["labels"][:], f["indices"][:]
        attrs = dict(f.attrs)
    assert feats.dtype == np.float32 and feats.shape == (24, 512, 2, 2)
    assert labels.dtype == np.int64 and indices.dtype == np.int64
    assert attrs["extract_features_from"] == "layer4.0" and attrs["image_size"] == 64
    assert attrs["classifier_ckpt"] == os.path.join("out", f"best_{CKPT}")
    samples = folders.scan_split(ws["data"], "train")
    all_labels, _ = folders.load_labels(ws["labels"], "train", samples)
    want = [i for i in range(len(samples)) if all_labels[i] < 3]
    np.testing.assert_array_equal(indices, want)  # ImageFolder order
    np.testing.assert_array_equal(labels, all_labels[want])
    # The values are the core's G on the center-cropped images.
    G, _ = build_resnet18_split(str(ckpt), "layer4.1", num_classes=4)
    ds = data.ClassRangeDataset(samples, all_labels, 0, 3, data.val_transform(64))
    x = torch.stack([ds[i][0] for i in (0, 13)])
    with torch.no_grad():
        ref = G(x).numpy()
    np.testing.assert_allclose(feats[[0, 13]], ref, rtol=1e-4, atol=1e-5)
    # A second run with the same inputs keeps the file.
    mtime = os.stat(out / "base_init_features.h5").st_mtime_ns
    proc = icf.run_main("extract_features.py", "--images_dir", ws["data"], "--label_dir",
                        ws["labels"], "--classifier_ckpt", ckpt, "--base_init_classes", 3,
                        "--image_size", 64, "--save_dir", out, "--device", "cpu")
    icf.assert_ok(proc)
    assert "up to date" in proc.stdout
    assert os.stat(out / "base_init_features.h5").st_mtime_ns == mtime


def test_fit_pq_outputs(ws):
    from remind.quantizer import ProductQuantizer

    out = ws["out"]
    args = ["--save_dir", out, "--num_codebooks", 8, "--codebook_size", 16, "--seed", 3]
    pq = ProductQuantizer.load(str(out / "pq.npz"))
    assert (pq.d, pq.M, pq.ksub) == (512, 8, 16)
    with h5py.File(out / "base_init_codes.h5", "r") as g, \
            h5py.File(out / "base_init_features.h5", "r") as f:
        codes = g["codes"][:]
        assert codes.dtype == np.uint8 and codes.shape == (24, 2, 2, 8)
        np.testing.assert_array_equal(g["labels"][:], f["labels"][:])
        np.testing.assert_array_equal(g["indices"][:], f["indices"][:])
        want = pq.encode_maps(torch.from_numpy(f["features"][:])).numpy()
        assert g.attrs["num_codebooks"] == 8 and g.attrs["codebook_size"] == 16
    np.testing.assert_array_equal(codes, want)
    proc = icf.run_main("fit_pq.py", *args)
    icf.assert_ok(proc)
    assert "up to date" in proc.stdout
    proc = icf.run_main("fit_pq.py", *args, "--codebook_size", 128,
                        "--codes_file", out / "other.h5", "--pq_file", out / "other.npz")
    icf.assert_clean_error(proc, "96 training vectors", "needs at least --codebook_size = 128")
    assert not (out / "other.h5").exists()


def test_extract_corrupt_image_error_and_skip(ws, tmp_path):
    ckpt = ws["ckpt"]
    victim = corrupt_copy(ws, tmp_path / "data")
    args = ["--images_dir", tmp_path / "data", "--label_dir", ws["labels"], "--classifier_ckpt",
            ckpt, "--base_init_classes", 3, "--image_size", 32, "--num_workers", 1,
            "--save_dir", tmp_path / "bi", "--device", "cpu"]
    proc = icf.run_main("extract_features.py", *args)  # the worker's failure, in one line
    icf.assert_clean_error(proc, "cannot read image", str(victim), "--skip_corrupt_images")
    assert not (tmp_path / "bi" / "base_init_features.h5").exists()
    proc = icf.run_main("extract_features.py", *args, "--skip_corrupt_images", "--num_workers", 0)
    icf.assert_ok(proc)
    assert f"warning: skipping unreadable image {victim}" in proc.stderr
    assert "skipped 1 unreadable image" in proc.stdout
    out = tmp_path / "bi" / "base_init_features.h5"
    with h5py.File(out, "r") as f:
        assert f["features"].shape[0] == 23 and f.attrs["skipped_unreadable"] == 1
        samples = folders.scan_split(str(tmp_path / "data"), "train")
        assert str(victim) not in {samples[i][0] for i in f["indices"][:]}
        fp = f.attrs["fingerprint"]
    from image_classification_experiments import extract_features

    # Never "up to date" while images were left out: the files may have been fixed since.
    assert extract_features.reusable(str(out), fp) == (False, "it left out 1 unreadable image(s)")


def test_mixed_precision_and_channels_last_train_on_the_cpu(ws):
    """--amp on the CPU is bfloat16 autocast (no grad scaler); --channels_last changes only the
    memory order: the checkpoint is an ordinary float32 torchvision state_dict."""
    save = ws["root"] / "run_amp"
    proc = train(ws, save, "--epochs", 1, "--amp", "--channels_last")
    icf.assert_ok(proc)
    assert "needs CUDA" not in proc.stdout
    best = torch.load(save / f"best_{CKPT}", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in best["state_dict"].values())
    from torchvision.models import resnet18

    resnet18(num_classes=4).load_state_dict(best["state_dict"])
    assert torch.load(save / CKPT, weights_only=True)["scaler"] is None  # bfloat16 needs no scaling
