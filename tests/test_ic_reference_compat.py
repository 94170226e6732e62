"""Base init and feature extraction as a drop-in for the reference: its pytorch-examples flags do
what they did (or say what to run instead), our checkpoints record their class order, and a
checkpoint in the reference's layout (alphabetical fc rows, keys under ``model.``) gives the same
network, accuracy and features as ours, with a shuffled class order."""
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import ic_fixtures as icf
from image_classification_experiments import imagenet_folders as folders
from image_classification_experiments.make_numpy_imagenet_label_files import make_label_files
from image_classification_experiments.train_base_init_network_from_scratch import (
    DEFAULT_DIST_URL, Dist, parse_args)
from remind.errors import InputError

ORDER = [icf.CLASSES[i] for i in (3, 1, 0, 2)]  # shuffled: fc rows in class order != alphabetical
FOLDERS = sorted(icf.CLASSES)
TRAIN = ["--base_max_class", 3, "--num_classes", 4, "-b", 6, "-j", 0, "--image_size", 32, "--seed", 2,
         "--lr", 0.02, "--device", "cpu", "--progress", "off", "--ckpt_file", "R.pth"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_imagenet_tree):
    """A 4-class tree, its label files and one epoch of base init (checkpoint best_R.pth)."""
    root = tmp_path_factory.mktemp("ic_ref")
    data = make_imagenet_tree(root / "data", n_train=4, n_val=2, size=32)
    make_label_files(data, str(root / "labels"), icf.write_order(root / "order.txt", ORDER))
    ws = {"root": root, "data": data, "labels": str(root / "labels"), "base": root / "base"}
    icf.assert_ok(train(ws, ws["base"], "--epochs", 1))
    ws["ckpt"] = ws["base"] / "best_R.pth"
    return ws


def train(ws, save_dir, *extra):
    return icf.run_main("train_base_init_network_from_scratch.py", "--data", ws["data"], "--labels_dir",
                        ws["labels"], "--save_dir", save_dir, *TRAIN, *extra)


def save_reference_layout(ours_path, dest):
    """Our checkpoint as the reference saved its own: fc rows in sorted-folder order, 'model.' keys."""
    ours = torch.load(ours_path, weights_only=True)
    sd = dict(ours["state_dict"])
    rows = torch.tensor([ours["class_order"].index(c) for c in FOLDERS])
    sd["fc.weight"], sd["fc.bias"] = sd["fc.weight"][rows], sd["fc.bias"][rows]
    torch.save({"arch": "ResNet18ClassifyAfterLayer4_1", "epoch": 1, "best_acc1": 0.0,
                "state_dict": {f"model.{k}": v for k, v in sd.items()}}, dest)
    return dest


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoints_record_the_class_order(tiny):
    for name in ("best_R.pth", "R.pth"):
        ckpt = torch.load(tiny["base"] / name, weights_only=True)
        assert ckpt["class_order"] == ORDER and ckpt["label_space"] == "class_order", name


def val_line(proc):
    icf.assert_ok(proc)
    return proc.stdout.strip().splitlines()[-1].split(": ", 1)[1]


def test_evaluate_reference_layout_gives_the_same_accuracy(tiny, tmp_path):
    from remind.networks import build_resnet18, load_base_network

    ref = save_reference_layout(tiny["ckpt"], tmp_path / "reference.pth")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = load_base_network(tiny["ckpt"], ORDER, FOLDERS, log=print).eval()(x)
        assert torch.equal(load_base_network(ref, ORDER, FOLDERS, log=print).eval()(x), want)
        assert not torch.allclose(build_resnet18(4, ref).eval()(x), want)  # its rows as stored: alphabetical
    ours = val_line(train(tiny, tmp_path / "e1", "--evaluate", "--resume", tiny["ckpt"]))
    assert val_line(train(tiny, tmp_path / "e2", "--evaluate", "--resume", ref)) == ours
    # A checkpoint that does not say its rows is refused, with the way out; stated, it loads.
    plain = tmp_path / "plain.pth"
    torch.save(torch.load(tiny["ckpt"], weights_only=True)["state_dict"], plain)
    icf.assert_clean_error(train(tiny, tmp_path / "e3", "--evaluate", "--resume", plain), "--ckpt_label_space")
    proc = train(tiny, tmp_path / "e4", "--evaluate", "--resume", plain, "--ckpt_label_space", "class_order")
    assert val_line(proc) == ours


def extract(tiny, ckpt, save_dir, *extra):
    proc = icf.run_main("extract_features.py", "--images_dir", tiny["data"], "--label_dir", tiny["labels"],
                        "--classifier_ckpt", ckpt, "--base_init_classes", 3, "--image_size", 32,
                        "-j", 0, "--device", "cpu", "--progress", "off", "--save_dir", save_dir, *extra)
    icf.assert_ok(proc)
    with h5py.File(os.path.join(save_dir, "base_init_features.h5"), "r") as f:
        return f["features"][:], proc


def test_extraction_from_either_layout_and_a_wider_fc(tiny, tmp_path):
    ours, _ = extract(tiny, tiny["ckpt"], tmp_path / "ours")
    ref, _ = extract(tiny, save_reference_layout(tiny["ckpt"], tmp_path / "ref.pth"), tmp_path / "ref")
    np.testing.assert_array_equal(ours, ref)
    # Our fc wider than the class order (the reference's 1000-way fc on a smaller tree): the rows
    # past the order are no class; the first --num_classes rows of the class order are kept.
    wide = torch.load(tiny["ckpt"], weights_only=True)
    for key, extra in (("fc.weight", torch.zeros(2, 512)), ("fc.bias", torch.zeros(2))):
        wide["state_dict"][key] = torch.cat([wide["state_dict"][key], extra])
    torch.save(wide, tmp_path / "wide.pth")
    feats, proc = extract(tiny, tmp_path / "wide.pth", tmp_path / "wide", "--num_classes", 3)
    np.testing.assert_array_equal(feats, ours)
    assert "kept the first 3 of the fc's 6 rows" in proc.stdout
    with h5py.File(tmp_path / "wide" / "base_init_features.h5", "r") as f:
        assert f.attrs["num_classes"] == 3


def test_other_resize_ratio_rebuilds_the_features(tiny, tmp_path):
    default, _ = extract(tiny, tiny["ckpt"], tmp_path)
    whole, proc = extract(tiny, tiny["ckpt"], tmp_path, "--eval_resize_ratio", "1.0")
    assert "made from other inputs; rebuilding" in proc.stdout and not np.array_equal(default, whole)
    with h5py.File(tmp_path / "base_init_features.h5", "r") as f:
        assert f.attrs["eval_resize_ratio"] == 1.0 and f.attrs["resize"] == 32
    # The streaming script's cache refuses features of another transform than its own.
    from argparse import Namespace

    from image_classification_experiments.base_init_cache import ensure_base_init_cache
    from image_classification_experiments.imagenet_folders import DataError

    for name in ("pq.npz", "base_init_codes.h5"):
        (tmp_path / name).touch()
    with pytest.raises(DataError, match="extracted with --eval_resize_ratio 1, this run uses 1.14286"):
        ensure_base_init_cache(Namespace(base_init_dir=str(tmp_path)), print)
    ensure_base_init_cache(Namespace(base_init_dir=str(tmp_path), eval_resize_ratio=1.0), print)


# ---------------------------------------------------------------------------- pytorch-examples flags
def test_start_epoch_print_freq_and_tf32_off(tiny, tmp_path):
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's own default
    proc = train(tiny, tmp_path, "--epochs", 2, "--start-epoch", 1, "--lr_step_size", 1, "-p", 1)
    icf.assert_ok(proc)
    assert "epoch 1/2" not in proc.stdout and "epoch 2/2" in proc.stdout
    assert "epoch 2 [0/2]  loss" in proc.stdout and "epoch 2 [1/2]  loss" in proc.stdout
    last = torch.load(tmp_path / "R.pth", weights_only=True)
    assert [h["epoch"] for h in last["history"]] == [2] and last["history"][0]["lr"] == pytest.approx(0.002)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32  # --tf32 not given


def layout(argv, environ=None, device="cpu", gpus=0):
    return Dist.from_args(parse_args(["--data", "d", *argv]), torch.device(device), environ or {}, gpus)


def test_distributed_flags_map_onto_torchrun_or_say_what_to_run():
    w = layout(["--world-size", "2", "--rank", "1", "--dist-url", "tcp://10.0.0.1:4000"])
    assert (w.world, w.rank, w.url, w.enabled) == (2, 1, "tcp://10.0.0.1:4000", True)
    w = layout(["--world-size", "4", "--rank", "0", "--gpu", "0"], {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert (w.world, w.rank, w.local_rank, w.url) == (2, 1, 1, "env://")  # torchrun's layout wins
    assert any("--world-size 4 ignored" in n for n in w.notes) and any("--gpu 0 ignored" in n for n in w.notes)
    with pytest.raises(InputError, match=r"torchrun --nproc_per_node 4 train_base_init"):
        layout(["--multiprocessing-distributed"], device="cuda", gpus=4)
    w = layout(["--multiprocessing-distributed"], device="cuda", gpus=1)
    assert not w.enabled and "this one process trains" in w.notes[0]
    with pytest.raises(InputError, match=r"needs --rank in 0\.\.1"):
        layout(["--world-size", "2"])
    assert parse_args(["--data", "d"]).dist_url == DEFAULT_DIST_URL
    assert not layout([]).enabled


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_world_of_two_started_by_hand(tiny, tmp_path):
    """The reference's by-hand launch: one process per --rank, joined at --dist-url (gloo on the CPU)."""
    url = f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, os.path.join(icf.SCRIPTS, "train_base_init_network_from_scratch.py"), "--data",
           tiny["data"], "--labels_dir", tiny["labels"], "--save_dir", tmp_path, *TRAIN, "--epochs", 1,
           "--world-size", 2, "--dist-url", url]
    procs = [subprocess.Popen([str(c) for c in cmd + ["--rank", r]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=icf.script_env()) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    assert "2 process(es) on cpu" in outs[0][0] and "using gloo on the CPU" in outs[0][0]
    assert outs[1][0] == ""  # only rank 0 reports
    assert torch.load(tmp_path / "best_R.pth", weights_only=True)["class_order"] == ORDER
