"""The CORe50 streaming script end to end on a generated mini tree in the official layout: the four
orderings (order properties read back from the order the run wrote), the outputs, the protocol
points, an exact resume, the fine-tune baseline with mixup, and a malformed tree's exit status
through the run script."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import core50_fixtures as c50f
from ic_fixtures import SCRIPTS, assert_clean_error, assert_ok, run_main, script_env
from image_classification_experiments import core50_data as c50

FRAMES = 3  # per video: 3 training sessions x 6 objects x 3 = 54 training frames, 18 test frames
# Tiny and fast: 32 px frames (1 x 1 maps) and F = the fc only, except where a test says otherwise.
COMMON = ["--weights", "none", "--train_sessions", "1,2,4", "--test_sessions", "3", "--frame_step", 1,
          "--eval_fraction", 0.5, "--image_size", 32, "--num_codebooks", 8, "--codebook_size", 4,
          "--rehearsal_samples", 4, "--random_resized_crops", "--use_mixup", "--base_init_epochs", 2,
          "--extract_features_from", "layer4.1", "--classifier", "fc", "--device", "cpu",
          "--num_workers", 0, "--batch_size", 16, "--progress", "off", "--seed", 5]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return c50f.make_core50_tree(tmp_path_factory.mktemp("c50run") / "core50_128x128", frames=FRAMES, size=16)


@pytest.fixture(scope="module")
def runs(tree, tmp_path_factory):
    """One complete run per ordering: {ordering: save_dir}."""
    root = tmp_path_factory.mktemp("c50out")
    out = {}
    for ordering in c50.ORDERINGS:
        out[ordering] = str(root / ordering)
        assert_ok(run_main("core50_experiment.py", "--images_dir", tree, *COMMON, "--ordering", ordering,
                           "--save_dir", out[ordering]))
    return out


def results(save_dir):
    with open(os.path.join(save_dir, "results.json")) as f:
        return json.load(f)


def written_order(save_dir):
    """The stream order as the run wrote it: rows of stream_order.csv (ints), checked against the npy."""
    with open(os.path.join(save_dir, "stream_order.csv")) as f:
        rows = [{k: (v if k == "path" else int(v)) for k, v in row.items()} for row in csv.DictReader(f)]
    np.testing.assert_array_equal(np.load(os.path.join(save_dir, "stream_order.npy")),
                                  [r["sample_index"] for r in rows])
    return rows


def runs_of(values):
    """Consecutive runs of equal values: [1, 1, 2, 1] -> [1, 2, 1]."""
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def is_temporal(rows):
    return [(r["session"], r["frame"]) for r in rows] == sorted((r["session"], r["frame"]) for r in rows)


def test_every_ordering_streams_each_training_frame_once(runs):
    for ordering, save_dir in runs.items():
        rows = written_order(save_dir)
        assert sorted(r["sample_index"] for r in rows) == list(range(3 * 6 * FRAMES)), ordering
        assert all(r["label"] == (r["object"] - 1) // 5 for r in rows)
        assert all(os.path.basename(r["path"]) == f"C_{r['session']:02d}_{r['object']:02d}_{r['frame']:03d}.png"
                   for r in rows)
    assert [r["sample_index"] for r in written_order(runs["iid"])] != list(range(54))


def test_class_orderings_keep_classes_contiguous(runs):
    for ordering in ("class_iid", "class_instance"):
        labels = [r["label"] for r in written_order(runs[ordering])]
        assert sorted(runs_of(labels)) == [0, 1, 2], ordering


def test_instance_orderings_keep_an_object_contiguous_and_in_time_order(runs):
    for ordering in ("instance", "class_instance"):
        rows = written_order(runs[ordering])
        objects = runs_of([r["object"] for r in rows])
        assert sorted(objects) == list(c50f.OBJECTS), ordering
        for o in objects:
            assert is_temporal([r for r in rows if r["object"] == o]), (ordering, o)


def test_results_have_the_protocol_points_and_the_outputs_exist(runs):
    base, points = c50.protocol_points(54, 0.1, 0.5)
    assert (base, points) == (5, [5, 32, 54])
    for ordering, save_dir in runs.items():
        res = results(save_dir)
        evaluations = res["evaluations"]
        labels = [r["label"] for r in written_order(save_dir)]
        assert [r["samples_seen"] for r in evaluations] == points, ordering
        assert [r["max_class"] for r in evaluations] == [len(set(labels[:p])) for p in points]
        assert res["ordering"] == ordering and res["base_init_frames"] == base
        assert res["class_order"] == list(dict.fromkeys(labels))
        for r in evaluations:
            assert 0 <= r["all_classes_top1"] <= r["all_classes_top5"] <= 100
        for p in points:
            probs = torch.load(os.path.join(save_dir, f"preds_samples_seen_{p}.pth"), weights_only=True)
            assert probs.shape == (18, 3)  # every test frame at every point, all 3 classes
            for name in (f"accuracies_samples_seen_{p}.json", f"remind_model/remind_classifier_F_{p}.pth",
                         f"remind_model/remind_state_{p}.pt"):
                assert os.path.isfile(os.path.join(save_dir, name)), name
        with open(os.path.join(save_dir, "results.csv")) as f:
            assert len(f.read().strip().splitlines()) == len(points) + 1
        with open(os.path.join(save_dir, "accuracy_plot.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert res["buffer_items"] == 54  # base init plus every streamed frame (no cap)


def test_resume_after_a_stop_equals_the_uninterrupted_run(tree, runs, tmp_path):
    part = str(tmp_path / "part")
    args = ["--images_dir", tree, *COMMON, "--ordering", "iid", "--save_dir", part]
    assert_ok(run_main("core50_experiment.py", *args, "--stop_after_steps", 30, "--checkpoint_interval", 8))
    assert len(results(part)["evaluations"]) == 2  # base init and the first point (27 steps) only
    other = list(args)
    other[other.index("--rehearsal_samples") + 1] = 9
    assert_clean_error(run_main("core50_experiment.py", *other, "--resume"), "latest.pt",
                       "--rehearsal_samples 4, now 9")
    assert_ok(run_main("core50_experiment.py", *args, "--resume"))
    full = runs["iid"]
    assert results(part)["evaluations"] == results(full)["evaluations"]
    a = torch.load(os.path.join(full, "preds_samples_seen_54.pth"), weights_only=True)
    assert torch.equal(a, torch.load(os.path.join(part, "preds_samples_seen_54.pth"), weights_only=True))
    a, b = (torch.load(os.path.join(d, "remind_model", "remind_classifier_F_54.pth"), weights_only=True)["state_dict"]
            for d in (full, part))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tune_baseline_with_mixup_on_the_paper_split(tree, tmp_path):
    """--rehearsal_samples 0 with mixup on (the reference crashed there), F = layer4.1 + fc."""
    args = list(COMMON)
    for flag, value in (("--rehearsal_samples", 0), ("--image_size", 64), ("--extract_features_from", "layer4.0"),
                        ("--classifier", "ResNet18_StartAt_Layer4_1"), ("--eval_fraction", 1)):
        args[args.index(flag) + 1] = value
    out = str(tmp_path / "finetune")
    assert_ok(run_main("core50_experiment.py", "--images_dir", tree, *args, "--ordering", "class_instance",
                       "--save_dir", out))
    assert [r["samples_seen"] for r in results(out)["evaluations"]] == [5, 54]


def test_weights_from_a_state_dict_file_load_into_g(tmp_path):
    """--weights PATH: every tensor but the fc comes from the file (a 1000-way fc is replaced)."""
    import torchvision
    from argparse import Namespace

    from image_classification_experiments.core50_experiment import core50_network

    source = torchvision.models.resnet18(weights=None)
    path = str(tmp_path / "r18.pth")
    torch.save(source.state_dict(), path)
    g, f = core50_network(Namespace(weights=path, extract_features_from="layer4.0"), 3)
    assert torch.equal(g.state_dict()["layer4.0.conv1.weight"], source.state_dict()["layer4.0.conv1.weight"])
    assert torch.equal(f.state_dict()["layer4.1.conv2.weight"], source.state_dict()["layer4.1.conv2.weight"])
    assert f.state_dict()["fc.weight"].shape == (3, 512)


def test_a_malformed_tree_is_a_one_line_error_through_the_run_script(tmp_path):
    """run_core50_experiment.sh (the script in a process of its own): a stray file in an object
    folder -> one line on stderr, exit status 2."""
    root = c50f.make_core50_tree(tmp_path / "core50", objects=(1, 6), frames=2, size=8)
    with open(os.path.join(root, "s2", "o6", "C_02_06_000.jpg"), "wb") as f:
        f.write(b"not a frame")
    env = {"CORE50_DIR": root, "TRAIN_SESSIONS": "1,2,4", "TEST_SESSIONS": "3", "WEIGHTS": "none",
           "DEVICE": "cpu", "SAVE_DIR": str(tmp_path / "out"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", os.path.join(SCRIPTS, "run_core50_experiment.sh")], capture_output=True,
                          text=True, env=script_env(env), timeout=300)
    assert_clean_error(proc, "core50_experiment.py: error: stray file", "C_02_06_000.jpg")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
