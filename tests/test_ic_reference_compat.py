"""Base init, feature extraction and the stream as a drop-in for the reference: its pytorch-examples
flags do what they did (or say what to run instead), our checkpoints record their class order, a
checkpoint in the reference's layout (alphabetical fc rows, keys under ``model.``) gives the same
network, accuracy, features and stream as ours, with a shuffled class order, and the stream's
preds and F files are in the reference's layout (alphabetical columns and rows)."""
import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import torchvision

import ic_fixtures as icf
from image_classification_experiments import imagenet_folders as folders
from image_classification_experiments.make_numpy_imagenet_label_files import make_label_files
from image_classification_experiments.reference_layout import load_reference_preds
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


# ---------------------------------------------------------------------------------- the stream
STREAM = ["--num_classes", 4, "--base_init_classes", 3, "--streaming_min_class", 3, "--streaming_max_class", 4,
          "--class_increment", 1, "--image_size", 32, "--num_codebooks", 8, "--codebook_size", 8,
          "--rehearsal_samples", 4, "--use_random_resized_crops", "--use_mixup", "--device", "cpu",
          "--num_workers", 0, "--batch_size", 8, "--seed", 1, "--progress", "off"]


def stream(tiny, ckpt, save_dir, *extra):
    """imagenet_experiment.py's main on the tiny tree (its base-init cache made in save_dir/base_init)."""
    return icf.run_main("imagenet_experiment.py", "--images_dir", tiny["data"], "--label_dir", tiny["labels"],
                        "--classifier_ckpt", ckpt, *STREAM, "--save_dir", save_dir,
                        "--base_init_dir", os.path.join(save_dir, "base_init"), *extra)


@pytest.fixture(scope="module")
def streamed(tiny, tmp_path_factory):
    """The same base network in our layout and in the reference's, each streamed."""
    root = tmp_path_factory.mktemp("ic_ref_stream")
    out = {"ref_ckpt": save_reference_layout(tiny["ckpt"], root / "reference.pth")}
    for name, ckpt in (("ours", tiny["ckpt"]), ("ref", out["ref_ckpt"])):
        out[name] = root / name
        out[name + "_proc"] = stream(tiny, ckpt, out[name])
        icf.assert_ok(out[name + "_proc"])
    return out


def results(save_dir):
    with open(os.path.join(save_dir, "results.json")) as f:
        return json.load(f)["evaluations"]


def test_stream_from_either_layout_gives_the_same_run(streamed):
    ours, ref = streamed["ours"], streamed["ref"]
    assert results(ref) == results(ours)  # the base-init accuracy and every point after it
    assert results(ours)[0]["max_class"] == 3 and results(ours)[0]["seen_classes_top1"] > 25  # not at chance
    assert "fc rows mapped from alphabetical order to the class order" in streamed["ref_proc"].stdout
    for point in (3, 4):
        tag = f"preds_min_trained_0_max_trained_{point}"
        assert np.array_equal(load_reference_preds(ours / f"{tag}.pth"), load_reference_preds(ref / f"{tag}.pth"))
        a, b = (torch.load(d / f"{tag}_ordered.pt", weights_only=True) for d in (ours, ref))
        assert torch.equal(a["probs"], b["probs"]) and torch.equal(a["sample_indices"], b["sample_indices"])
        a, b = (torch.load(d / "remind_model" / f"remind_classifier_F_{point}.pth", weights_only=True)
                for d in (ours, ref))
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_stream_refuses_what_it_cannot_map(tiny, tmp_path):
    # A checkpoint that does not say its rows: refused with the way out (before any work).
    plain = tmp_path / "plain.pth"
    torch.save(torch.load(tiny["ckpt"], weights_only=True)["state_dict"], plain)
    icf.assert_clean_error(stream(tiny, plain, tmp_path / "a"), "--ckpt_label_space")
    # More classes than the label files name.
    icf.assert_clean_error(stream(tiny, tiny["ckpt"], tmp_path / "b", "--num_classes", 5),
                           "--num_classes 5", "name only 4 classes")
    # An fc without a row for every class of --num_classes.
    narrow = torch.load(tiny["ckpt"], weights_only=True)
    narrow["class_order"] = narrow["class_order"][:3]
    for key in ("fc.weight", "fc.bias"):
        narrow["state_dict"][key] = narrow["state_dict"][key][:3]
    torch.save(narrow, tmp_path / "narrow.pth")
    icf.assert_clean_error(stream(tiny, tmp_path / "narrow.pth", tmp_path / "c"), "--num_classes 4",
                           f"no row for class {ORDER[3]!r}", "--allow_fc_resize")


def test_preds_file_in_the_reference_layout(tiny, streamed):
    """Read as the reference's analysis code reads it: a float32 numpy array, rows the val images of
    the seen classes in ImageFolder order, columns (and targets) ImageFolder's alphabetical indices."""
    save_dir = streamed["ours"]
    samples = folders.scan_split(tiny["data"], "val")
    labels, _ = folders.load_labels(tiny["labels"], "val", samples)
    imagefolder_targets = np.array([FOLDERS.index(wnid) for _, wnid in samples])
    for point, evaluation in zip((3, 4), results(save_dir)):
        tag = f"preds_min_trained_0_max_trained_{point}"
        preds = torch.load(save_dir / f"{tag}.pth", weights_only=False)  # a trusted file, as the reference
        assert isinstance(preds, np.ndarray) and preds.dtype == np.float32
        seen = np.flatnonzero(labels < point)  # ImageFolder order
        assert preds.shape == (len(seen), len(FOLDERS))
        ours = torch.load(save_dir / f"{tag}_ordered.pt", weights_only=True)
        assert ours["class_order"] == ORDER and ours["class_folders"] == FOLDERS
        row = {int(s): r for r, s in enumerate(ours["sample_indices"])}
        for r, s in enumerate(seen):
            for k, wnid in enumerate(ORDER):
                assert preds[r, FOLDERS.index(wnid)] == ours["probs"][row[s], k]
        assert np.array_equal(ours["targets"].numpy(), labels[ours["sample_indices"].numpy()])
        top1 = 100 * np.mean(preds.argmax(1) == imagefolder_targets[seen])
        assert top1 == pytest.approx(evaluation["seen_classes_top1"])


def test_f_file_has_the_reference_keys(streamed):
    """remind_classifier_F_<b>.pth: the reference's model_state_dict (its module names, alphabetical fc
    rows) and optimizer_state_dict beside ours."""
    from remind.networks import split_resnet

    f_file = torch.load(streamed["ours"] / "remind_model" / "remind_classifier_F_4.pth", weights_only=True)
    ours, ref = f_file["state_dict"], f_file["model_state_dict"]
    assert set(ref) == {f"model.{k}" for k in ours} and "model.layer4.1.conv1.weight" in ref
    assert f_file["class_order"] == ORDER
    for k, wnid in enumerate(ORDER):
        j = FOLDERS.index(wnid)
        assert torch.equal(ref["model.fc.weight"][j], ours["fc.weight"][k])
        assert torch.equal(ref["model.fc.bias"][j], ours["fc.bias"][k])
    _, f = split_resnet(torchvision.models.resnet18(num_classes=4), "layer4.1")
    f.load_state_dict({k.removeprefix("model."): v for k, v in ref.items()})
    opt = torch.optim.SGD(f.parameters(), lr=0.1, momentum=0.9)
    opt.load_state_dict(f_file["optimizer_state_dict"])
    fc_w = len(list(f.parameters())) - 2
    momentum = f_file["optimizer_state_dict"]["state"][fc_w]["momentum_buffer"]
    assert torch.equal(momentum[FOLDERS.index(ORDER[0])], f_file["optimizer"]["state"][fc_w]["momentum_buffer"][0])
