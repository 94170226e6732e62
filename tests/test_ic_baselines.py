"""The paper's baselines on the shared stream harness, on a tiny ImageNet-style tree and a tiny
CORe50 tree: fine-tune with mixup, the compression ablation (raw / sq8 latents at the PQ buffer's
bytes), Deep SLDA and the offline upper bound (cached per point), each above chance and resuming
exactly; Omega of their results; the ablation runner in a tiny configuration.

Tiny and fast: 32 px images (1 x 1 maps), F = the fc only (G up to layer4.1)."""
import json
import os

import pytest
import torch

import core50_fixtures as c50f
from ic_fixtures import CLASSES, assert_clean_error, assert_ok, run_main, write_order

CHANCE = 100 / 4  # the ImageNet-style tree: 4 classes
C50_CHANCE = 100 / 3  # the CORe50 tree: 3 classes
SPLIT = ["--extract_features_from", "layer4.1", "--classifier", "fc", "--image_size", 32, "--device", "cpu",
         "--num_workers", 0, "--batch_size", 16, "--progress", "off"]
OFFLINE = ["--offline_epochs", 6, "--offline_batch_size", 8, "--offline_lr", 0.05]


def results(save_dir):
    with open(os.path.join(save_dir, "results.json")) as f:
        return json.load(f)


def curve(save_dir, key="seen_classes_top1"):
    return [r[key] for r in results(save_dir)["evaluations"]]


# ------------------------------------------------------------------------ ImageNet-style
@pytest.fixture(scope="module")
def inet(tmp_path_factory):
    """4 classes (2 base, then 1 per chunk), 6 train / 3 val images each; the base network a seeded
    random ResNet-18 in our checkpoint format (a few epochs on 12 images leave BN's running
    statistics unusable, while random features separate the coloured classes)."""
    import torchvision

    from ic_fixtures import make_imagenet_tree
    from remind.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("baselines")

    tree = make_imagenet_tree(str(root / "data"), classes=CLASSES, n_train=6, n_val=3, size=32)
    labels = str(root / "labels")
    assert_ok(run_main("make_numpy_imagenet_label_files.py", "--data", tree, "--labels_dir", labels,
                       "--class_order_text_file", write_order(root / "order.txt", CLASSES)))
    torch.manual_seed(0)
    ckpt = str(root / "base.pth")
    save_checkpoint(ckpt, {"state_dict": torchvision.models.resnet18(weights=None, num_classes=4).state_dict(),
                           "class_order": CLASSES, "label_space": "class_order"})
    common = ["--images_dir", tree, "--label_dir", labels, "--num_classes", 4, "--base_init_classes", 2,
              "--classifier_ckpt", ckpt,
              "--streaming_min_class", 2, "--streaming_max_class", 4, "--class_increment", 1, *SPLIT,
              "--num_codebooks", 32, "--codebook_size", 8, "--base_init_dir", str(root / "cache"), "--seed", 3,
              "--start_lr", 0.05, "--rehearsal_samples", 4, "--use_mixup", "--random_resized_crops"]
    return {"root": root, "tree": tree, "labels": labels, "common": common}


def run_ok(script, *args):
    assert_ok(run_main(script, *[str(a) for a in args]))


@pytest.fixture(scope="module")
def inet_finetune(inet):
    out = str(inet["root"] / "finetune")
    run_ok("imagenet_experiment.py", *inet["common"], "--rehearsal_samples", 0, "--save_dir", out)
    return out


@pytest.fixture(scope="module")
def inet_slda(inet):
    out = str(inet["root"] / "slda")
    run_ok("slda_experiment.py", "--dataset", "imagenet", *inet["common"], "--save_dir", out)
    return out


def test_imagenet_fine_tune_with_mixup_and_no_replay(inet_finetune):
    res = results(inet_finetune)
    assert [r["max_class"] for r in res["evaluations"]] == [2, 3, 4]
    assert res["final"]["non_base_classes_top1"] > CHANCE  # it learns the new classes (and forgets)


def test_imagenet_codecs_at_equal_memory_and_an_exact_resume(inet):
    """Equal memory, codes only: raw without a cap holds (12 base + 12 streamed) x 32 B / 2048 B = 0
    items: a clear error; with --num_codebooks 128: 24 x 128 / 2048 = 1 item; capped at 4096 PQ
    items: 64, so all 24 (and it learns every class). sq8 capped at 32 PQ items: 32 x 32 / 512 = 2.
    (On this tree sq8 learns little: its per-channel ranges come from the 2 base classes.)"""
    root, common = inet["root"], inet["common"]
    proc = run_main("imagenet_experiment.py", *common, "--latent_codec", "raw", "--save_dir", str(root / "raw0"))
    assert_clean_error(proc, "not one item of 2048 bytes fits")
    raw = str(root / "raw")
    run_ok("imagenet_experiment.py", *common, "--latent_codec", "raw", "--num_codebooks", 128,
           "--base_init_dir", str(root / "cache128"), "--save_dir", raw)
    assert results(raw)["buffer_items"] == 1
    raw = str(root / "raw_capped")
    run_ok("imagenet_experiment.py", *common, "--latent_codec", "raw", "--max_buffer_size", 4096, "--save_dir", raw)
    assert results(raw)["buffer_items"] == 24 and results(raw)["final"]["seen_classes_top1"] > CHANCE
    sq8 = str(root / "sq8")
    args = [*common, "--latent_codec", "sq8", "--max_buffer_size", 32, "--save_dir", sq8]
    run_ok("imagenet_experiment.py", *args)
    assert results(sq8)["buffer_items"] == 2
    part = str(root / "sq8_part")
    args[-1] = part
    run_ok("imagenet_experiment.py", *args, "--stop_after_steps", 8, "--checkpoint_interval", 5)
    run_ok("imagenet_experiment.py", *args, "--resume")
    assert results(part)["evaluations"] == results(sq8)["evaluations"]
    proc = run_main("imagenet_experiment.py", *args[:-1], part, "--latent_codec", "pq", "--resume")
    assert_clean_error(proc, "--latent_codec sq8, now pq")


def test_imagenet_slda_learns_and_resumes_exactly(inet, inet_slda):
    root, common = inet["root"], inet["common"]
    full, part = inet_slda, str(root / "slda_part")
    res = results(full)
    assert res["method"] == "deep_slda" and res["slda"]["shrinkage"] == 1e-4 and res["slda"]["plastic_covariance"]
    assert min(curve(full)) > CHANCE
    run_ok("slda_experiment.py", "--dataset", "imagenet", *common, "--save_dir", part, "--stop_after_steps", 7)
    run_ok("slda_experiment.py", "--dataset", "imagenet", *common, "--save_dir", part, "--resume")
    assert results(part)["evaluations"] == res["evaluations"]
    a, b = (torch.load(os.path.join(d, "preds_min_trained_0_max_trained_4.pth"), weights_only=False)  # ours
            for d in (full, part))
    assert (a == b).all()


def test_imagenet_offline_bound_is_cached_per_point_and_feeds_omega(inet, inet_finetune, inet_slda):
    root, common = inet["root"], inet["common"]
    cache = str(root / "offline_cache")
    full = str(root / "offline")
    run_ok("offline_experiment.py", "--dataset", "imagenet", *common, *OFFLINE, "--save_dir", full,
           "--offline_cache_dir", cache)
    res = results(full)
    assert res["method"] == "offline" and len(res["cache_keys"]) == 3 == len(os.listdir(cache))
    assert min(curve(full)) > CHANCE
    # another method's settings (no replay, no mixup) share the points: every one from the cache
    other = str(root / "offline_other")
    proc = run_main("offline_experiment.py", "--dataset", "imagenet", *common, *OFFLINE, "--rehearsal_samples", 0,
                    "--save_dir", other, "--offline_cache_dir", cache)
    assert_ok(proc)
    assert proc.stdout.count(": cached (") == 3 and results(other)["evaluations"] == res["evaluations"]
    # stopped after the first point, then continued: the same as the uninterrupted run
    part, cache2 = str(root / "offline_part"), str(root / "offline_cache2")
    args = ["--dataset", "imagenet", *common, *OFFLINE, "--save_dir", part, "--offline_cache_dir", cache2]
    run_ok("offline_experiment.py", *args, "--stop_after_points", 1)
    assert len(os.listdir(cache2)) == 1
    run_ok("offline_experiment.py", *args)
    assert results(part)["evaluations"] == res["evaluations"]
    # the whole network on the images (G changes at every point: the val images are encoded again)
    whole = str(root / "offline_whole")
    run_ok("offline_experiment.py", "--dataset", "imagenet", *common, "--train_whole_network", "--offline_epochs", 1,
           "--offline_batch_size", 24, "--save_dir", whole, "--offline_cache_dir", cache)
    assert [r["max_class"] for r in results(whole)["evaluations"]] == [2, 3, 4] and len(os.listdir(cache)) == 6
    # Omega of the fine-tune and SLDA runs against it (the same points)
    proc = run_main("compute_omega.py", "--offline", full, f"SLDA={inet_slda}", f"fine-tune={inet_finetune}")
    assert_ok(proc)
    assert "SLDA" in proc.stdout and "offline (upper bound)" in proc.stdout


# ---------------------------------------------------------------------------------- CORe50
C50 = ["--weights", "none", "--train_sessions", "1,2,4", "--test_sessions", "3", "--frame_step", 1,
       "--eval_fraction", 0.5, *SPLIT, "--num_codebooks", 8, "--codebook_size", 4, "--rehearsal_samples", 4,
       "--random_resized_crops", "--use_mixup", "--base_init_epochs", 2, "--seed", 5, "--ordering", "class_iid",
       "--start_lr", 0.05]


@pytest.fixture(scope="module")
def c50tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("c50base")
    return {"root": root, "tree": c50f.make_core50_tree(root / "core50_128x128", frames=3, size=16)}


def test_core50_slda_and_sq8_learn_and_resume_exactly(c50tree):
    root, tree = c50tree["root"], c50tree["tree"]
    for script, extra in (("slda_experiment.py", ["--dataset", "core50"]),
                          ("core50_experiment.py", ["--latent_codec", "sq8", "--max_buffer_size", 256])):
        full, part = str(root / (script + "full")), str(root / (script + "part"))
        run_ok(script, *extra, "--images_dir", tree, *C50, "--save_dir", full)
        assert curve(full, "all_classes_top1")[-1] > C50_CHANCE, script
        run_ok(script, *extra, "--images_dir", tree, *C50, "--save_dir", part, "--stop_after_steps", 30)
        run_ok(script, *extra, "--images_dir", tree, *C50, "--save_dir", part, "--resume")
        assert results(part)["evaluations"] == results(full)["evaluations"], script


def test_core50_offline_bound_on_codes_and_on_the_whole_network(c50tree):
    root, tree = c50tree["root"], c50tree["tree"]
    out = str(root / "offline")
    run_ok("offline_experiment.py", "--dataset", "core50", "--images_dir", tree, *C50, *OFFLINE, "--save_dir", out)
    res = results(out)
    assert [r["samples_seen"] for r in res["evaluations"]] == [5, 32, 54] and res["ordering"] == "class_iid"
    assert curve(out, "all_classes_top1")[-1] > C50_CHANCE
    whole = str(root / "offline_whole")
    run_ok("offline_experiment.py", "--dataset", "core50", "--images_dir", tree, *C50, "--train_whole_network",
           "--offline_epochs", 1, "--offline_batch_size", 32, "--save_dir", whole)
    assert results(whole)["train_whole_network"] and len(results(whole)["evaluations"]) == 3


# ------------------------------------------------------------------------------ ablation runner
def test_ablation_runner_in_a_tiny_configuration(inet, tmp_path):
    """Two seeds (each its own base network, made here), the mixup factor (on = the reference
    configuration, off), 3 streamed images per class: a mean +- std table; a rerun reuses it all."""
    out = tmp_path / "ablation"
    argv = ["--data_dir", inet["tree"], "--labels_dir", inet["labels"], "--base_root", tmp_path / "none",
            "--out_dir", out, "--seeds", 0, 1, "--factors", "mixup", "--num_classes", 4, "--base_classes", 2,
            "--stream_per_class", 3, "--base_per_class", 6, "--image_size", 32, "--base_epochs", 1,
            "--base_batch", 12, "--reference_codebooks", 8, "--codebook_size", 4, "--reference_replay", 2,
            "--buffer_cap", 10, "--workers", 0, "--device", "cpu"]
    proc = run_main("run_ablation.py", *argv)
    assert_ok(proc)
    with open(out / "ablation.json") as f:
        summary = json.load(f)
    rows = summary["configurations"]
    assert sorted(e["factors"][0][1] for e in rows.values()) == [False, True]
    for entry in rows.values():
        assert [r["seed"] for r in entry["runs"]] == [0, 1]
        assert all(0 <= r["final"] <= 100 and r["wall_s"] > 0 for r in entry["runs"])
    table = (out / "ablation.md").read_text()
    assert "| mixup | on |" in table and "| mixup | off |" in table and " +- " in table and "Machine:" in table
    for seed in (0, 1):
        assert os.path.isfile(out / f"seed_{seed}" / "base_init" / "best_ResNet18_base_2.pth")
    again = run_main("run_ablation.py", *argv)
    assert_ok(again)
    assert "seed 0: M8_" not in again.stdout  # finished runs are read, not run again
    assert (out / "ablation.md").read_text().split("\n", 3)[3] == table.split("\n", 3)[3]  # the same rows
