"""The image-classification streams' bad-input matrix (imagenet_experiment.py, core50_experiment.py
and the label maker): each bad input is a one-line error naming the file or flag and what was
expected, a non-zero exit, and nothing written (no save dir, or the save dir of an earlier run
left as it was); where the reference would go on (an unreadable image with
--skip_corrupt_images, a grayscale, palette or CMYK image), the run goes on and says so.

Each run is the script's ``main`` in this process, as ``remind.runtime.run_cli`` runs it from a
shell; one test runs the script itself for its exit status."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import core50_fixtures as c50f
import ic_fixtures as icf

CLASSES = icf.CLASSES + ["n01494475", "n01496331"]  # 2 base classes, 2 chunks of 2


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A 6-class tree, its label files, a base network and a finished tiny run (``done``)."""
    from image_classification_experiments.make_numpy_imagenet_label_files import make_label_files

    root = tmp_path_factory.mktemp("ic_bad")
    data = icf.make_imagenet_tree(root / "data", classes=CLASSES, n_train=8, n_val=2, size=32)
    make_label_files(data, str(root / "labels"), icf.write_order(root / "order.txt", CLASSES))
    icf.assert_ok(icf.run_main("train_base_init_network_from_scratch.py", "--data", data, "--labels_dir",
                               root / "labels", "--base_max_class", 2, "--num_classes", 6, "--epochs", 1, "-b", 8,
                               "--device", "cpu", "--image_size", 32, "-j", 0, "--save_dir", root / "base",
                               "--num_threads", 1, "--progress", "off"))
    ws = {"root": root, "data": data, "labels": str(root / "labels"),
          "ckpt": str(root / "base" / "best_ResNet18ClassifyAfterLayer4_1.pth")}
    ws["done"] = str(root / "done")
    icf.assert_ok(icf.run_main("imagenet_experiment.py", *ic_args(ws), "--save_dir", ws["done"]))
    return ws


def ic_args(ws, **changes):
    """The tiny run's flags; ``changes``: flag -> new value (None drops the flag)."""
    flags = {"--images_dir": ws["data"], "--label_dir": ws["labels"], "--classifier_ckpt": ws["ckpt"],
             "--num_classes": 6, "--base_init_classes": 2, "--streaming_min_class": 2, "--streaming_max_class": 6,
             "--class_increment": 2, "--image_size": 32, "--extract_features_from": "layer4.1",
             "--classifier": "fc", "--num_channels": 512, "--num_codebooks": 8, "--codebook_size": 16,
             "--rehearsal_samples": 4, "--device": "cpu", "--num_workers": 0, "--batch_size": 8, "--seed": 3,
             "--num_threads": 1, "--progress": "off"}
    flags.update({"--" + k: v for k, v in changes.items()})
    out = []
    for flag, value in flags.items():
        if value is not None:
            out += [flag] if value is True else [flag, value]
    return out


def fails(script, args, save_dir, *fragments):
    """``script args --save_dir save_dir`` stops with one line naming ``fragments``, exit 2, and
    writes nothing: no save dir (or an existing one unchanged)."""
    before = snapshot(save_dir)
    proc = icf.run_main(script, *args, "--save_dir", save_dir)
    icf.assert_clean_error(proc, *fragments)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), proc.stderr
    assert snapshot(save_dir) == before, f"{save_dir} was written to"
    return lines[0]


def snapshot(folder):
    """{relative path: (size, mtime_ns)} of every file below ``folder`` (None: no such folder)."""
    if not os.path.exists(folder):
        return None
    return {os.path.relpath(os.path.join(d, n), folder): (os.stat(os.path.join(d, n)).st_size,
                                                        os.stat(os.path.join(d, n)).st_mtime_ns)
            for d, _, names in os.walk(folder) for n in names}


def copy_tree(ws, tmp_path):
    """A private copy of the data tree and its label files, to spoil."""
    data, labels = tmp_path / "data", tmp_path / "labels"
    shutil.copytree(ws["data"], data)
    shutil.copytree(ws["labels"], labels)
    return str(data), str(labels)


# ------------------------------------------------------------------------- data folders
def test_missing_or_empty_data_folders(ws, tmp_path):
    out = tmp_path / "out"
    fails("imagenet_experiment.py", ic_args(ws, images_dir=tmp_path / "nowhere"), out, "train folder not found",
          "nowhere")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    fails("imagenet_experiment.py", ic_args(ws, images_dir=tmp_path / "empty"), out, "no class folders in",
          os.path.join("empty", "train"))
    data, labels = copy_tree(ws, tmp_path)
    for name in os.listdir(os.path.join(data, "val", CLASSES[3])):
        os.remove(os.path.join(data, "val", CLASSES[3], name))
    fails("imagenet_experiment.py", ic_args(ws, images_dir=data, label_dir=labels), out,
          "class folders without images", CLASSES[3])


def test_missing_or_mismatched_label_files(ws, tmp_path):
    out = tmp_path / "out"
    fails("imagenet_experiment.py", ic_args(ws, label_dir=tmp_path / "no_labels"), out,
          "train label file not found", "make_numpy_imagenet_label_files.py")
    data, labels = copy_tree(ws, tmp_path)
    src = os.path.join(data, "train", CLASSES[4])
    shutil.copy(os.path.join(src, sorted(os.listdir(src))[0]), os.path.join(src, "extra.png"))
    fails("imagenet_experiment.py", ic_args(ws, images_dir=data, label_dir=labels), out,
          "imagenet_train_labels.npy has 48 labels but the train folder has 49 images")
    np.save(os.path.join(labels, "imagenet_val_labels.npy"), np.arange(12) % 6)  # classes interleaved
    os.remove(os.path.join(src, "extra.png"))
    fails("imagenet_experiment.py", ic_args(ws, images_dir=data, label_dir=labels), out,
          "imagenet_val_labels.npy", "carry different labels")


def test_class_order_files_with_unknown_missing_or_duplicate_classes(ws, tmp_path):
    labels = tmp_path / "labels"
    cases = {"unknown": (CLASSES + ["n99999999"], "classes in", "but not in", "n99999999"),
             "missing": (CLASSES[:-1], "but not in", CLASSES[-1]),
             "duplicate": (CLASSES + [CLASSES[0]], "duplicate classes", CLASSES[0])}
    for name, (order, *fragments) in cases.items():
        path = icf.write_order(tmp_path / f"{name}.txt", order)
        proc = icf.run_main("make_numpy_imagenet_label_files.py", "--data", ws["data"], "--labels_dir", labels,
                            "--class_order_text_file", path)
        icf.assert_clean_error(proc, f"{name}.txt", *fragments)
        assert len(proc.stderr.strip().splitlines()) == 1 and not labels.exists(), name


# ----------------------------------------------------------------------------- images
def test_an_unreadable_image_stops_the_run_naming_it_or_is_skipped_and_counted(ws, tmp_path):
    """Images are read as the stream reaches them (checking each of ImageNet's 1.3M first would
    read the data set twice): an unreadable one stops the run with one line naming it, and the run
    continues with --resume once it is fixed; --skip_corrupt_images skips and counts it."""
    data, labels = copy_tree(ws, tmp_path)
    bad = os.path.join(data, "train", CLASSES[4], sorted(os.listdir(os.path.join(data, "train", CLASSES[4])))[1])
    with open(bad, "r+b") as f:  # a truncated PNG
        f.truncate(os.path.getsize(bad) // 2)
    text = os.path.join(data, "val", CLASSES[5], "notes.png")
    shutil.copy(os.path.join(data, "val", CLASSES[5], sorted(os.listdir(os.path.join(data, "val", CLASSES[5])))[0]),
                text)
    with open(text, "w") as f:  # a text file with an image's name
        f.write("not an image")
    np.save(os.path.join(labels, "imagenet_val_labels.npy"),
            np.repeat(np.arange(6), [2, 2, 2, 2, 2, 3]))
    out = str(tmp_path / "out")
    proc = icf.run_main("imagenet_experiment.py", *ic_args(ws, images_dir=data, label_dir=labels), "--save_dir", out)
    icf.assert_clean_error(proc, "cannot read image", bad, "--skip_corrupt_images")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    skipped = str(tmp_path / "skipped")
    proc = icf.run_main("imagenet_experiment.py", *ic_args(ws, images_dir=data, label_dir=labels),
                        "--skip_corrupt_images", "--save_dir", skipped)
    icf.assert_ok(proc)
    assert f"skipping unreadable image {bad}" in proc.stderr and f"skipping unreadable image {text}" in proc.stderr
    assert "skipped 2 unreadable image(s)" in proc.stdout
    os.remove(bad)  # fixed (one image fewer: new label files), the stopped run continues
    np.save(os.path.join(labels, "imagenet_train_labels.npy"), np.repeat(np.arange(6), [8, 8, 8, 8, 7, 8]))
    icf.assert_ok(icf.run_main("imagenet_experiment.py", *ic_args(ws, images_dir=data, label_dir=labels),
                               "--save_dir", out, "--resume", "--skip_corrupt_images"))


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "I;16"])
def test_grayscale_palette_and_cmyk_images_are_read_as_rgb(tmp_path, mode):
    from image_classification_experiments import imagenet_data as data

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 12, 3), dtype=np.uint8), "RGB")
    img = rgb.convert("L").convert("I;16") if mode == "I;16" else rgb.convert(mode)
    path = str(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"))
    img.save(path)
    ds = data.ClassRangeDataset([(path, "c")], [0], 0, 1, data.val_transform(8, 1.0))
    x, label, index = ds[0]
    assert tuple(x.shape) == (3, 8, 8) and (label, index) == (0, 0)
    assert data.pil_loader(path).mode == "RGB"


def test_a_stream_with_grayscale_palette_and_cmyk_images_runs(ws, tmp_path):
    """Grayscale, palette and CMYK images are converted; files that are not images by their name
    (notes, .DS_Store) are not samples, as for torchvision's ImageFolder: the label files still match."""
    data, labels = copy_tree(ws, tmp_path)
    folder = os.path.join(data, "train", CLASSES[3])
    names = sorted(os.listdir(folder))
    for name, mode in zip(names, ("L", "P", "CMYK")):
        path = os.path.join(folder, name)
        Image.open(path).convert(mode).save(path, format="JPEG" if mode == "CMYK" else "PNG")
    for name in ("notes.txt", ".DS_Store"):
        with open(os.path.join(folder, name), "w") as f:
            f.write("not an image")
    icf.assert_ok(icf.run_main("imagenet_experiment.py", *ic_args(ws, images_dir=data, label_dir=labels),
                               "--save_dir", tmp_path / "out"))


# ------------------------------------------------------------------ checkpoints and resume
@pytest.mark.parametrize("flag,value,fragment", [
    ("--num_codebooks", 4, "--num_codebooks 8, now 4"),
    ("--rehearsal_samples", 2, "--rehearsal_samples 4, now 2"),
    ("--image_size", 64, "--image_size 32, now 64"),
    ("--streaming_max_class", 4, "--streaming_max_class 6, now 4"),
    ("--extract_features_from", "layer4.0", "layer4.1"),
])
def test_resume_from_a_checkpoint_of_another_configuration(ws, tmp_path, flag, value, fragment):
    run = str(tmp_path / "run")
    shutil.copytree(ws["done"], run)
    args = ic_args(ws, **{flag[2:]: value})
    if flag == "--extract_features_from":  # the split moves: F starts at layer4.1
        args = ic_args(ws, extract_features_from="layer4.0", classifier="layer4.1")
    fails("imagenet_experiment.py", [*args, "--resume"], run, "latest.pt", fragment)


def test_a_run_whose_checkpoints_are_all_damaged(ws, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ws["done"], run)
    for name in ("latest.pt", "latest.1.pt"):
        path = run / "checkpoints" / name
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    line = fails("imagenet_experiment.py", [*ic_args(ws), "--resume"], run, "no usable checkpoint among 2 versions")
    assert "latest.pt: not a readable checkpoint" in line and "latest.1.pt: not a readable checkpoint" in line


def test_a_base_network_of_another_configuration(ws, tmp_path):
    import torchvision

    other = tmp_path / "r3.pth"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), other)
    fails("imagenet_experiment.py", ic_args(ws, classifier_ckpt=other), tmp_path / "out", "r3.pth",
          "--allow_fc_resize")
    deeper = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(num_classes=6).state_dict(), deeper)
    fails("imagenet_experiment.py", ic_args(ws, classifier_ckpt=deeper, allow_fc_resize=True), tmp_path / "out",
          "r34.pth", "'layer1.2.", "another architecture")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    fails("imagenet_experiment.py", ic_args(ws, classifier_ckpt=bad), tmp_path / "out", "bad.pth")


def test_a_base_init_cache_of_another_quantizer(ws, tmp_path):
    cache = os.path.join(ws["done"], "base_init")
    fails("imagenet_experiment.py", ic_args(ws, base_init_dir=cache, codebook_size=8), tmp_path / "out",
          "pq.npz", "codebooks of 16", "of 8")


def test_resume_directory_without_a_checkpoint(ws, tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    fails("imagenet_experiment.py", [*ic_args(ws, streaming_min_class=4), "--resume_full_path", empty],
          tmp_path / "out", "--resume_full_path", "remind_state_4.pt", "--keep_states")
    # plain --resume without a checkpoint starts the run, and says so (the run scripts always pass it)
    out = tmp_path / "fresh"
    proc = icf.run_main("imagenet_experiment.py", *ic_args(ws), "--resume", "--stop_after_steps", 1,
                        "--save_dir", out)
    icf.assert_ok(proc)
    assert "--resume: no checkpoint in" in proc.stdout and "starting a new run" in proc.stdout


# ---------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("changes,fragments", [
    ({"codebook_size": 12}, ("--codebook_size", "power of two")),
    ({"num_codebooks": 7}, ("--num_channels 512", "not divisible by --num_codebooks 7")),
    ({"num_channels": 256, "num_codebooks": 8}, ("--num_channels 256", "G (up to layer4.1) gives 512")),
    ({"max_buffer_size": 6, "use_mixup": True}, ("--max_buffer_size 6", "8 replays", "--use_mixup")),
    ({"max_buffer_size": 3}, ("--max_buffer_size 3", "4 replays")),
    ({"keep_states": -1}, ("--keep_states",)),
    ({"stop_after_steps": 0}, ("--stop_after_steps",)),
    ({"use_mixup": True, "mixup_alpha": 0}, ("--mixup_alpha",)),
    ({"streaming_max_class": 7}, ("--streaming_max_class", "--num_classes")),
    ({"base_init_classes": 3}, ("--base_init_classes", "--streaming_min_class")),
    ({"classifier": "ResNet18_StartAt_Layer3_1"}, ("--classifier", "layer4.1")),
    ({"max_per_class": 0}, ("--max_per_class",)),
])
def test_bad_or_contradicting_flags(ws, tmp_path, changes, fragments):
    fails("imagenet_experiment.py", ic_args(ws, **changes), tmp_path / "out", *fragments)


def test_the_script_exits_2_with_one_line_and_writes_nothing(ws, tmp_path):
    out = tmp_path / "out"
    proc = icf.run_script("imagenet_experiment.py", *ic_args(ws, images_dir=tmp_path / "nowhere"), "--save_dir", out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"imagenet_experiment.py: error: train folder not found: {tmp_path / 'nowhere' / 'train'} "
        "(expected <data>/train)"]
    assert not out.exists()


# ------------------------------------------------------------------------------- CORe50
C50 = ["--weights", "none", "--train_sessions", "1,2,4", "--test_sessions", "3", "--frame_step", 1,
       "--eval_fraction", 0.5, "--image_size", 32, "--num_codebooks", 8, "--codebook_size", 4,
       "--rehearsal_samples", 4, "--base_init_epochs", 1, "--extract_features_from", "layer4.1", "--classifier", "fc",
       "--device", "cpu", "--num_workers", 0, "--batch_size", 16, "--progress", "off", "--seed", 5,
       "--num_threads", 1]


@pytest.fixture(scope="module")
def core50(tmp_path_factory):
    root = tmp_path_factory.mktemp("c50_bad")
    tree = c50f.make_core50_tree(root / "core50", frames=3, size=16)
    done = str(root / "done")
    icf.assert_ok(icf.run_main("core50_experiment.py", "--images_dir", tree, *C50, "--save_dir", done))
    return {"root": root, "tree": tree, "done": done}


def test_core50_bad_inputs_write_nothing(core50, tmp_path):
    out, tree = tmp_path / "out", core50["tree"]
    fails("core50_experiment.py", ["--images_dir", tmp_path / "nowhere", *C50], out, "CORe50 folder not found")
    fails("core50_experiment.py", ["--images_dir", tree, *C50, "--test_sessions", "2"], out,
          "session s2 is both a training and a test session")
    fails("core50_experiment.py", ["--images_dir", tree, *C50, "--weights", tmp_path / "none.pth"], out, "--weights")
    fails("core50_experiment.py", ["--images_dir", tree, *C50, "--max_buffer_size", 2], out, "--max_buffer_size 2")
    fails("core50_experiment.py", ["--images_dir", tree, *C50, "--num_codebooks", 7], out,
          "G's channels", "512", "--num_codebooks 7")
    run = str(tmp_path / "run")
    shutil.copytree(core50["done"], run)
    fails("core50_experiment.py", ["--images_dir", tree, *C50, "--codebook_size", 8, "--resume"], run, "latest.pt",
          "--codebook_size 4, now 8")
    frame = c50f.frame_path(tree, 1, 1, 0)
    other = tmp_path / "core50"
    shutil.copytree(tree, other)
    os.remove(c50f.frame_path(str(other), 1, 1, 0))
    fails("core50_experiment.py", ["--images_dir", other, *C50, "--resume"], run, "latest.pt", "stream_digest")
    assert os.path.isfile(frame)
