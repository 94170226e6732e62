"""Class orders, label files, ImageFolder order, flat val + LOC_val_solution.csv, clear errors.

The scripts' ``main`` runs in this process; one test per script runs it as a process (exit status)."""
import os
import shutil

import numpy as np
import pytest

import ic_fixtures as icf
from image_classification_experiments import imagenet_folders as folders

ORDER = [icf.CLASSES[i] for i in (2, 0, 3, 1)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory, make_imagenet_tree):
    root = tmp_path_factory.mktemp("ic_tree")
    data = make_imagenet_tree(root / "data", n_train=5, n_val=2, size=16)
    order = icf.write_order(root / "order.txt", ORDER)
    return {"root": root, "data": data, "order": order}


def expected_labels(samples):
    return np.array([ORDER.index(w) for _, w in samples], dtype=np.int64)


def test_scan_matches_torchvision_imagefolder(tree):
    from torchvision.datasets import ImageFolder

    for split in folders.SPLITS:
        ours = folders.scan_split(tree["data"], split)
        ref = ImageFolder(os.path.join(tree["data"], split))
        assert [p for p, _ in ours] == [p for p, _ in ref.samples]
        assert [w for _, w in ours] == [ref.classes[t] for t in ref.targets]


def test_label_maker_writes_ordered_labels_in_imagefolder_order(tree, tmp_path):
    labels_dir = tmp_path / "labels"
    proc = icf.run_main("make_numpy_imagenet_label_files.py", "--data", tree["data"],
                        "--labels_dir", labels_dir, "--class_order_text_file", tree["order"])
    icf.assert_ok(proc)
    for split in folders.SPLITS:
        arr = np.load(labels_dir / f"imagenet_{split}_labels.npy")
        assert arr.dtype == np.int64
        np.testing.assert_array_equal(arr, expected_labels(folders.scan_split(tree["data"], split)))
    assert "train: 20 images, 4 classes" in proc.stdout


def test_legacy_imagenet_indices_location_is_read(tree, tmp_path):
    samples = folders.scan_split(tree["data"], "train")
    legacy = tmp_path / "imagenet_indices"
    legacy.mkdir()
    np.save(legacy / "imagenet_train_labels.npy", expected_labels(samples))
    labels, path = folders.load_labels(str(tmp_path), "train", samples)
    assert path.endswith(os.path.join("imagenet_indices", "imagenet_train_labels.npy"))
    np.testing.assert_array_equal(labels, expected_labels(samples))


def test_flat_val_with_loc_val_solution_csv(tree, tmp_path, make_flat_val):
    flat_root, csv_path = make_flat_val(tmp_path / "flat", tree["data"])
    labels_dir = tmp_path / "labels_flat"
    proc = icf.run_main("make_numpy_imagenet_label_files.py", "--data", flat_root,
                        "--labels_dir", labels_dir, "--class_order_text_file", tree["order"],
                        "--val_labels_csv", csv_path)
    icf.assert_ok(proc)
    flat = folders.scan_split(flat_root, "val", csv_path)
    # Same order as ImageFolder on the class-folder layout: by wnid, then by file name.
    assert [w for _, w in flat] == [w for _, w in folders.scan_split(tree["data"], "val")]
    np.testing.assert_array_equal(np.load(labels_dir / "imagenet_val_labels.npy"),
                                  expected_labels(flat))
    # The dataset returns the ground-truth ordered label of each flat file.
    from image_classification_experiments import imagenet_data as data

    labels, _ = folders.load_labels(str(labels_dir), "val", flat)
    ds = data.ClassRangeDataset(flat, labels, 0, 4, data.val_transform(16))
    truth = folders.read_val_solution_csv(csv_path)
    for i in range(len(ds)):
        img, label, index = ds[i]
        image_id = os.path.splitext(os.path.basename(flat[index][0]))[0]
        assert label == ORDER.index(truth[image_id])


def test_flat_val_errors(tree, tmp_path, make_flat_val):
    flat_root, csv_path = make_flat_val(tmp_path / "flat", tree["data"])
    args = ["--data", flat_root, "--labels_dir", tmp_path / "l", "--class_order_text_file", tree["order"]]
    proc = icf.run_main("make_numpy_imagenet_label_files.py", *args)
    icf.assert_clean_error(proc, "has no class sub-folders", "--val_labels_csv")
    stray = os.path.join(flat_root, "val", "ILSVRC2012_val_99999999.JPEG")
    shutil.copy(os.path.join(flat_root, "val", "ILSVRC2012_val_00000001.JPEG"), stray)
    proc = icf.run_main("make_numpy_imagenet_label_files.py", *args, "--val_labels_csv", csv_path)
    icf.assert_clean_error(proc, "val images without a row in", "ILSVRC2012_val_99999999.JPEG")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("id,label\nx,y\n")
    proc = icf.run_main("make_numpy_imagenet_label_files.py", *args, "--val_labels_csv", bad_csv)
    icf.assert_clean_error(proc, "expected the columns ImageId,PredictionString")
    assert not (tmp_path / "l").exists()


@pytest.mark.parametrize("case", ["not_on_disk", "not_in_file", "duplicate", "missing_train",
                                  "missing_val", "missing_order"])
def test_label_maker_clear_errors(tree, tmp_path, case):
    data_dir, order_file = tree["data"], tree["order"]
    if case == "not_on_disk":
        order_file = icf.write_order(tmp_path / "o.txt", ORDER + ["n09999999"])
        expect = ["but not in", "n09999999"]
    elif case == "not_in_file":
        order_file = icf.write_order(tmp_path / "o.txt", ORDER[:3])
        expect = ["classes in", "but not in", ORDER[3]]
    elif case == "duplicate":
        order_file = icf.write_order(tmp_path / "o.txt", ORDER + [ORDER[1]])
        expect = ["duplicate classes", f"{ORDER[1]} (lines 2 and 5)"]
    elif case in ("missing_train", "missing_val"):
        split = case.split("_")[1]
        data_dir = tmp_path / "d"
        shutil.copytree(tree["data"], data_dir)
        shutil.rmtree(data_dir / split)
        expect = [f"{split} folder not found", os.path.join(str(data_dir), split)]
    else:
        order_file = tmp_path / "nope.txt"
        expect = ["class order file not found", "nope.txt"]
    proc = icf.run_main("make_numpy_imagenet_label_files.py", "--data", data_dir,
                        "--labels_dir", tmp_path / "labels", "--class_order_text_file", order_file)
    icf.assert_clean_error(proc, *expect)
    assert not (tmp_path / "labels").exists()  # nothing half-written


def test_class_order_on_disk_but_not_in_file_names_the_folder(tree, tmp_path):
    """The script itself: one line on stderr and exit status 2."""
    data_dir = tmp_path / "d"
    shutil.copytree(tree["data"], data_dir)
    shutil.copytree(data_dir / "train" / ORDER[0], data_dir / "train" / "n07777777")
    proc = icf.run_script("make_numpy_imagenet_label_files.py", "--data", data_dir,
                          "--labels_dir", tmp_path / "labels", "--class_order_text_file", tree["order"])
    icf.assert_clean_error(proc, "but not in", "n07777777", "train")
    assert proc.returncode == 2


def test_random_class_order_is_seeded_and_never_overwrites(tree, tmp_path):
    out = tmp_path / "order.txt"
    icf.assert_ok(icf.run_main("make_random_class_order.py", "--data", tree["data"],
                               "--class_order_text_file", out, "--seed", 5))
    first = out.read_text().split()
    assert sorted(first) == sorted(icf.CLASSES)
    assert first == folders.random_class_order(os.path.join(tree["data"], "train"), 5)
    proc = icf.run_script("make_random_class_order.py", "--data", tree["data"],
                          "--class_order_text_file", out, "--seed", 6)
    icf.assert_clean_error(proc, "exists; pass --overwrite")
    assert proc.returncode == 2
    icf.assert_ok(icf.run_main("make_random_class_order.py", "--data", tree["data"],
                               "--class_order_text_file", out, "--seed", 6, "--overwrite"))


def test_range_dataset_keeps_imagefolder_order_and_returns_sample_index(tree):
    import torch

    from image_classification_experiments import imagenet_data as data

    samples = folders.scan_split(tree["data"], "train")
    labels = expected_labels(samples)
    ds = data.ClassRangeDataset(samples, labels, 1, 3, data.val_transform(16))
    want = [i for i in range(len(samples)) if 1 <= labels[i] < 3]
    assert list(ds.indices) == want
    img, label, index = ds[0]
    assert isinstance(img, torch.Tensor) and img.shape == (3, 16, 16)
    assert (label, index) == (int(labels[want[0]]), want[0])
    capped = data.ClassRangeDataset(samples, labels, 0, 4, None, max_per_class=2)
    assert len(capped) == 8
    for c in range(4):
        first_two = [i for i in range(len(samples)) if labels[i] == c][:2]
        assert [i for i in capped.indices if labels[i] == c] == first_two


def test_transforms_follow_the_256_over_224_rule():
    from PIL import Image

    from image_classification_experiments import imagenet_data as data

    assert data.resize_size(224) == 256 and data.resize_size(32) == 37
    img = Image.new("RGB", (50, 40))
    assert data.val_transform(32)(img).shape == (3, 32, 32)
    assert data.train_transform(32)(img).shape == (3, 32, 32)


def test_eval_resize_ratio_keeps_the_whole_image_at_one():
    """Ratio 1.0: an image already at image_size passes unchanged (no border cut); the default
    256/224 resizes and cuts the border; fractions parse."""
    import argparse

    from PIL import Image
    from torchvision import transforms

    from image_classification_experiments import imagenet_data as data

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB")
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)])
    assert np.array_equal(data.val_transform(32, 1.0)(img).numpy(), plain(img).numpy())
    assert not np.allclose(data.val_transform(32)(img).numpy(), plain(img).numpy())
    assert data.parse_ratio("256/224") == data.DEFAULT_EVAL_RESIZE_RATIO == 256 / 224
    assert data.parse_ratio("1") == 1.0 and data.resize_size(64, 1.0) == 64
    for bad in ("0.5", "a/b", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            data.parse_ratio(bad)


def test_class_order_read_back_from_label_files(tree, tmp_path):
    make = icf.run_main("make_numpy_imagenet_label_files.py", "--data", tree["data"], "--labels_dir",
                        tmp_path, "--class_order_text_file", tree["order"])
    icf.assert_ok(make)
    orders = []
    for split in folders.SPLITS:
        samples = folders.scan_split(tree["data"], split)
        labels, path = folders.load_labels(str(tmp_path), split, samples)
        orders.append(folders.class_order_from_labels(samples, labels, path))
    assert orders[0] == orders[1] == ORDER
    folders.check_same_class_order(orders[0], orders[1], "val")
    with pytest.raises(folders.DataError, match="label 0 is"):
        folders.check_same_class_order(orders[0], orders[0][::-1], "val")
    with pytest.raises(folders.DataError, match="no images carry label 1"):
        folders.class_order_from_labels([("a", "x"), ("b", "y")], [0, 2])


def test_label_file_checks(tree, tmp_path):
    samples = folders.scan_split(tree["data"], "train")
    labels = expected_labels(samples)
    np.save(tmp_path / "imagenet_train_labels.npy", labels[:-1])
    with pytest.raises(folders.DataError, match="has 19 labels but the train folder has 20 images"):
        folders.load_labels(str(tmp_path), "train", samples)
    swapped = labels.copy()
    swapped[0] = (swapped[0] + 1) % 4
    np.save(tmp_path / "imagenet_train_labels.npy", swapped)
    with pytest.raises(folders.DataError, match="carry different labels"):
        folders.load_labels(str(tmp_path), "train", samples)
    with pytest.raises(folders.DataError, match="label file not found"):
        folders.load_labels(str(tmp_path / "none"), "train", samples)
