"""The streaming script end to end on a tiny ImageFolder tree, by its command line (its ``main`` in
this process; one test runs the script itself for its exit status)."""
import json
import os

import pytest
import torch

from ic_fixtures import CLASSES, assert_clean_error, assert_ok, run_main, run_script, write_order
from image_classification_experiments.reference_layout import load_reference_preds

ALL_CLASSES = CLASSES + ["n01494475", "n01496331"]  # 6 classes: 2 base + 2 chunks of 2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, make_imagenet_tree):
    """Tree, label files, base network, features and PQ codes: every step by its script."""
    root = tmp_path_factory.mktemp("stream")
    data = make_imagenet_tree(str(root / "data"), classes=ALL_CLASSES, n_train=8, n_val=3, size=32)
    order = write_order(root / "order.txt", ALL_CLASSES)
    labels = str(root / "labels")
    assert_ok(run_main("make_numpy_imagenet_label_files.py", "--data", data, "--labels_dir", labels,
                       "--class_order_text_file", order))
    base = str(root / "base")
    assert_ok(run_main("train_base_init_network_from_scratch.py", "--data", data, "--labels_dir", labels,
                       "--base_max_class", 2, "--num_classes", 6, "--epochs", 1, "-b", 8,
                       "--device", "cpu", "--image_size", 32, "-j", 0, "--save_dir", base))
    ckpt = os.path.join(base, "best_ResNet18ClassifyAfterLayer4_1.pth")
    cache = str(root / "base_init")
    assert_ok(run_main("extract_features.py", "--images_dir", data, "--label_dir", labels,
                       "--classifier_ckpt", ckpt, "--base_init_classes", 2, "--image_size", 32,
                       "--device", "cpu", "--num_workers", 0, "--save_dir", cache))
    assert_ok(run_main("fit_pq.py", "--save_dir", cache, "--num_codebooks", 8, "--codebook_size", 16,
                       "--device", "cpu"))
    common = ["--images_dir", data, "--label_dir", labels, "--classifier_ckpt", ckpt,
              "--num_classes", 6, "--base_init_classes", 2, "--streaming_min_class", 2,
              "--streaming_max_class", 6, "--class_increment", 2, "--image_size", 32,
              "--num_codebooks", 8, "--codebook_size", 16, "--rehearsal_samples", 4,
              "--random_resized_crops", "--use_mixup", "--device", "cpu", "--num_workers", 0,
              "--batch_size", 8, "--base_init_dir", cache, "--seed", 3]
    full = str(root / "full")
    proc = run_main("imagenet_experiment.py", *common, "--save_dir", full)
    assert_ok(proc)
    return {"root": root, "common": common, "full": full, "stdout": proc.stdout}


def read_results(save_dir):
    with open(os.path.join(save_dir, "results.json")) as f:
        return json.load(f)


def test_outputs_of_a_complete_run(prepared):
    full = prepared["full"]
    res = read_results(full)
    assert [r["max_class"] for r in res["evaluations"]] == [2, 4, 6]
    assert res["buffer_items"] == 2 * 8 + 4 * 8  # base init items plus every streamed image
    for b in (2, 4, 6):
        assert os.path.isfile(os.path.join(full, f"accuracies_min_trained_0_max_trained_{b}.json"))
        probs = torch.as_tensor(load_reference_preds(os.path.join(full, f"preds_min_trained_0_max_trained_{b}.pth")))
        assert probs.shape == (3 * b, 6)  # 3 val images per seen class, softmax over all classes
        torch.testing.assert_close(probs.sum(1), torch.ones(3 * b))
        assert os.path.isfile(os.path.join(full, "remind_model", f"remind_classifier_F_{b}.pth"))
        assert os.path.isfile(os.path.join(full, "remind_model", f"remind_state_{b}.pt"))
    with open(os.path.join(full, "accuracies_min_trained_0_max_trained_6.json")) as f:
        acc = json.load(f)
    assert len(acc["seen_classes_top1"]) == 3 and len(acc["non_base_classes_top1"]) == 2
    assert acc["seen_classes_top1"][-1] == res["final"]["seen_classes_top1"]
    with open(os.path.join(full, "results.csv")) as f:
        assert len(f.read().strip().splitlines()) == 4
    with open(os.path.join(full, "accuracy_plot.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "classes_seen" in prepared["stdout"]
    assert not [n for n in os.listdir(full) if n.endswith(".tmp")]
    with open(os.path.join(full, "log.txt")) as f:
        stages = [line for line in f if "stage times:" in line]
    assert len(stages) == 1
    for name in ("stream images (load, G, PQ)", "streaming steps", "evaluation", "outputs and checkpoints"):
        assert name in stages[0], name


def test_channels_last_flag_streams_in_that_memory_order(prepared):
    save = str(prepared["root"] / "channels_last")
    assert_ok(run_main("imagenet_experiment.py", *prepared["common"], "--save_dir", save, "--channels_last"))
    evals, full = read_results(save)["evaluations"], read_results(prepared["full"])["evaluations"]
    assert [r["max_class"] for r in evals] == [r["max_class"] for r in full]
    with open(os.path.join(save, "config.json")) as f:
        assert json.load(f)["channels_last"] is True


def test_resume_after_an_interruption_equals_the_uninterrupted_run(prepared):
    part = str(prepared["root"] / "part")
    proc = run_main("imagenet_experiment.py", *prepared["common"], "--save_dir", part,
                    "--stop_after_samples", 11, "--checkpoint_interval", 5)
    assert_ok(proc)
    assert not os.path.exists(os.path.join(part, "results.json")) or \
        len(read_results(part)["evaluations"]) < 3
    assert_ok(run_main("imagenet_experiment.py", *prepared["common"], "--save_dir", part, "--resume"))
    assert read_results(part)["evaluations"] == read_results(prepared["full"])["evaluations"]
    for name in ("preds_min_trained_0_max_trained_6.pth", "remind_model/remind_classifier_F_6.pth"):
        a, b = (read_output(os.path.join(d, name)) for d in (prepared["full"], part))
        if isinstance(a, dict):
            a, b = a["state_dict"], b["state_dict"]
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.equal(a, b)


def read_output(path):
    """An F file (weights-only), or a preds file in the reference's layout as a tensor."""
    if os.path.basename(path).startswith("preds_"):
        return torch.as_tensor(load_reference_preds(path))
    return torch.load(path, weights_only=True)


def test_reference_resume_from_a_saved_point(prepared):
    """--resume_full_path DIR --streaming_min_class 4 continues from the state saved after class 3."""
    out = str(prepared["root"] / "from4")
    args = list(prepared["common"])
    args[args.index("--streaming_min_class") + 1] = 4
    assert_ok(run_main("imagenet_experiment.py", *args, "--save_dir", out,
                       "--resume_full_path", prepared["full"]))
    full = read_results(prepared["full"])["evaluations"]
    assert read_results(out)["evaluations"] == full


def test_resume_with_other_settings_is_a_clear_error(prepared):
    part = str(prepared["root"] / "other")
    assert_ok(run_main("imagenet_experiment.py", *prepared["common"], "--save_dir", part,
                       "--stop_after_samples", 3))
    args = list(prepared["common"])
    args[args.index("--rehearsal_samples") + 1] = 9
    proc = run_main("imagenet_experiment.py", *args, "--save_dir", part, "--resume")
    assert_clean_error(proc, "latest.pt", "--rehearsal_samples 4, now 9")


def test_bad_flags_are_clear_errors(prepared):
    """The script itself: one line on stderr and exit status 2 for bad input."""
    args = list(prepared["common"])
    args[args.index("--classifier_ckpt") + 1] = "missing.pth"
    proc = run_script("imagenet_experiment.py", *args)
    assert_clean_error(proc, "--classifier_ckpt missing.pth")
    assert proc.returncode == 2
    proc = run_main("imagenet_experiment.py", *prepared["common"], "--classifier", "ResNet18_StartAt_Layer3_1")
    assert_clean_error(proc, "--classifier ResNet18_StartAt_Layer3_1", "layer4.1")


def test_state_of_the_previous_version_is_read(prepared):
    """A state in the previous layout (no "format": the run-defining settings under "config" and
    torch's generator only) still continues the run exactly."""
    from remind.checkpoint import load_checkpoint, save_checkpoint

    old = prepared["root"] / "old_layout"
    (old / "remind_model").mkdir(parents=True)
    new = load_checkpoint(os.path.join(prepared["full"], "remind_model", "remind_state_4.pt"))
    assert new["format"] == "remind_ic_stream" and "fingerprint" in new
    save_checkpoint(old / "remind_model" / "remind_state_4.pt", {
        "model": new["model"], "history": new["history"], "config": new["fingerprint"],
        "chunk_start": new["chunk_start"], "offset": new["offset"], "torch_rng": new["rng"]["torch"]})
    args = list(prepared["common"])
    args[args.index("--streaming_min_class") + 1] = 4
    out = str(prepared["root"] / "from_old_layout")
    assert_ok(run_main("imagenet_experiment.py", *args, "--save_dir", out, "--resume_full_path", old))
    assert read_results(out)["evaluations"] == read_results(prepared["full"])["evaluations"]
    args[args.index("--rehearsal_samples") + 1] = 9
    proc = run_main("imagenet_experiment.py", *args, "--save_dir", out + "_other", "--resume_full_path", old)
    assert_clean_error(proc, "remind_state_4.pt", "--rehearsal_samples 4, now 9")


def test_checkpoint_clock_saves_by_steps_by_minutes_and_at_the_stop(monkeypatch):
    from argparse import Namespace
    from types import SimpleNamespace

    from image_classification_experiments import stream_state as ie

    saves, now = [], [0.0]
    monkeypatch.setattr(ie, "save_latest", lambda args, model, state: saves.append(model.steps))
    args = Namespace(checkpoint_interval=4, checkpoint_interval_min=1.0, stop_after_steps=10)
    clock, model = ie.CheckpointClock(args, now=lambda: now[0]), SimpleNamespace(steps=0)
    stops = []
    for step, seconds in enumerate([10, 20, 70, 80, 90, 100, 150, 160, 170, 180], start=1):
        model.steps, now[0] = step, seconds
        stops.append(clock.after_step(model, {}))
    # 60 s after the start (step 3), every 4 steps (4, 8), 60 s after the save at step 4 (7), the stop
    assert saves == [3, 4, 7, 8, 10]
    assert stops == [False] * 9 + [True]
