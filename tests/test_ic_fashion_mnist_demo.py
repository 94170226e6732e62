"""Fashion-MNIST demo: idx -> ImageFolder converter (on tiny synthetic idx files in the real format),
its class order and label files, idempotence, clear errors; the run-comparison table."""
import gzip
import json
import os

import numpy as np
import pytest
from PIL import Image

import ic_fixtures as icf
from image_classification_experiments import compare_runs
from image_classification_experiments import imagenet_folders as folders
from image_classification_experiments import make_fashion_mnist_imagefolder as converter
from image_classification_experiments.imagenet_folders import DataError

CLASSES = ["c0_tshirt", "c1_trouser", "c2_pullover", "c3_dress", "c4_coat",
           "c5_sandal", "c6_shirt", "c7_sneaker", "c8_bag", "c9_ankle_boot"]
IDX = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
       "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def write_idx(folder, split, images, labels):
    """gzip idx3 images (16-byte big-endian header) and idx1 labels (8-byte header)."""
    img_name, lab_name = IDX[split]
    n, rows, cols = images.shape
    with gzip.open(os.path.join(folder, img_name), "wb") as f:
        f.write(np.array([0x803, n, rows, cols], dtype=">u4").tobytes() + images.astype(np.uint8).tobytes())
    with gzip.open(os.path.join(folder, lab_name), "wb") as f:
        f.write(np.array([0x801, n], dtype=">u4").tobytes() + labels.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    """Synthetic Fashion-MNIST: 3 train + 2 test 28x28 images per class, labels shuffled."""
    folder = tmp_path_factory.mktemp("fmnist_idx")
    rng = np.random.default_rng(0)
    data = {}
    for split, per_class in (("train", 3), ("val", 2)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        write_idx(folder, split, images, labels)
        data[split] = (images, labels)
    return str(folder), data


def convert(capsys, out, idx_dir, *extra):
    """Run the converter in this process (quick); returns its stdout."""
    converter.main(["--idx_dir", str(idx_dir), "--out_dir", str(out)] + [str(e) for e in extra])
    return capsys.readouterr().out


def test_converter_writes_tree_class_order_and_labels(idx, tmp_path, capsys):
    idx_dir, data = idx
    out = tmp_path / "fm"
    stdout = convert(capsys, out, idx_dir)
    for split, prefix in (("train", "train"), ("val", "test")):
        images, labels = data[split]
        assert sorted(os.listdir(out / split)) == CLASSES
        for c, name in enumerate(CLASSES):
            files = sorted(os.listdir(out / split / name))
            expected = [f"{prefix}_{i:05d}.png" for i in np.flatnonzero(labels == c)]
            assert files == expected
        # One image: 64x64 RGB, three equal channels, the bilinear resize of the idx image.
        i = int(np.flatnonzero(labels == 4)[0])
        img = Image.open(out / split / "c4_coat" / f"{prefix}_{i:05d}.png")
        assert img.mode == "RGB" and img.size == (64, 64)
        arr = np.asarray(img)
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
        ref = np.asarray(Image.fromarray(images[i], "L").resize((64, 64), Image.BILINEAR))
        np.testing.assert_array_equal(arr[..., 0], ref)
    order_file = out / "fashion_mnist_class_order.txt"
    assert order_file.read_text().split() == CLASSES
    for split in folders.SPLITS:
        samples = folders.scan_split(str(out), split)
        labels, path = folders.load_labels(str(out / "labels"), split, samples)
        assert path == str(out / "labels" / f"imagenet_{split}_labels.npy")
        np.testing.assert_array_equal(labels, [CLASSES.index(w) for _, w in samples])
        np.testing.assert_array_equal(labels, np.sort(data[split][1]))  # classes are in label order
    assert "train: 30 images, 10 classes (3-3 per class)" in stdout
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")], "temporary folders left behind"


def test_converter_is_idempotent_and_rebuilds_on_new_settings(idx, tmp_path, capsys):
    idx_dir, _ = idx
    out = tmp_path / "fm"
    small = ("--train_per_class", 2, "--val_per_class", 1)
    convert(capsys, out, idx_dir, *small)
    probe = out / "train" / "c0_tshirt"
    assert len(os.listdir(probe)) == 2 and len(os.listdir(out / "val" / "c9_ankle_boot")) == 1
    stamp = os.stat(out / "manifest.json").st_mtime_ns
    assert "reusing it" in convert(capsys, out, idx_dir, *small)
    assert os.stat(out / "manifest.json").st_mtime_ns == stamp
    # A complete tree is reused even where the idx files are gone.
    assert "reusing it" in convert(capsys, out, tmp_path / "nowhere", *small)
    # An interrupted tree (a class folder lost an image) and other settings are rebuilt.
    os.remove(probe / sorted(os.listdir(probe))[0])
    convert(capsys, out, idx_dir, *small)
    assert len(os.listdir(probe)) == 2
    assert "rebuilding" in convert(capsys, out, idx_dir, "--train_per_class", 1)
    assert len(os.listdir(probe)) == 1 and len(os.listdir(out / "val" / "c9_ankle_boot")) == 2
    assert len(np.load(out / "labels" / "imagenet_train_labels.npy")) == 10


def test_missing_data_says_how_to_get_it(tmp_path):
    """The script itself (a subprocess): one line on stderr, exit status 2, no traceback."""
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = icf.run_script("make_fashion_mnist_imagefolder.py", "--idx_dir", empty, "--out_dir",
                          tmp_path / "fm", timeout=60)
    icf.assert_clean_error(proc, "Fashion-MNIST idx files not found", "apt-get install dataset-fashion-mnist",
                           "--download", str(empty))
    assert proc.returncode == 2
    assert not (tmp_path / "fm").exists()


def test_corrupt_idx_file_is_a_clear_error(idx, tmp_path, capsys):
    idx_dir, _ = idx
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in IDX["train"] + IDX["val"]:
        os.symlink(os.path.join(idx_dir, name), bad / name)
    os.remove(bad / IDX["val"][0])
    with gzip.open(bad / IDX["val"][0], "wb") as f:
        f.write(np.array([0x801, 3, 28, 28], dtype=">u4").tobytes())
    with pytest.raises(DataError, match="magic number") as err:
        convert(capsys, tmp_path / "fm", bad)
    assert IDX["val"][0] in str(err.value)
    assert not (tmp_path / "fm").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_compare_runs_table(tmp_path, capsys):
    def results(name, seen):
        d = tmp_path / name
        d.mkdir()
        ev = [{"max_class": 5 + k, "seen_classes_top1": v} for k, v in enumerate(seen)]
        (d / "results.json").write_text(json.dumps({"evaluations": ev}))
        return str(d)

    a = [results("r0", [90.0, 80.0]), results("r1", [92.0, 70.0])]
    b = [results("f0", [90.0, 10.0])]
    compare_runs.main([f"REMIND={','.join(a)}", f"fine-tune={b[0]}", "--json", str(tmp_path / "t.json"),
                       "--plot", str(tmp_path / "t.png")])
    out = capsys.readouterr().out
    assert "91.00 +- 1.41" in out and "75.00" in out and "10.00" in out
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["mean"]["REMIND"]["6"] == 75.0
    assert table["runs"]["REMIND"]["5"] == [90.0, 92.0]
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError, match="results.json"):
        compare_runs.main([f"x={tmp_path / 'nope'}"])


def test_search_without_idx_dir(idx, tmp_path, monkeypatch, capsys):
    """Without --idx_dir: the download folder, then the Debian package's folder (from dpkg -L)."""
    idx_dir, _ = idx
    monkeypatch.setattr(converter, "debian_idx_dir", lambda: None)
    with pytest.raises(DataError, match="dataset-fashion-mnist: not installed") as err:
        converter.main(["--download_root", str(tmp_path / "dl"), "--out_dir", str(tmp_path / "fm")])
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    monkeypatch.setattr(converter, "debian_idx_dir", lambda: idx_dir)
    converter.main(["--download_root", str(tmp_path / "dl"), "--out_dir", str(tmp_path / "fm")])
    assert f"images from {idx_dir}" in capsys.readouterr().out
