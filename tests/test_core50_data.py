"""CORe50 reader: the official layout, clear one-line errors, the four orderings, the dataset."""
import builtins
import os
import shutil

import numpy as np
import pytest
import torch

import core50_fixtures as c50f
from image_classification_experiments import core50_data as c50
from image_classification_experiments.imagenet_data import CorruptImageError, Unreadable
from remind.errors import InputError


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return c50f.make_core50_tree(tmp_path_factory.mktemp("core50") / "core50_128x128")


@pytest.fixture
def fresh(tmp_path):
    """A tree a test may damage."""
    return c50f.make_core50_tree(tmp_path / "core50", frames=3, size=8)


@pytest.fixture(scope="module")
def train(tree):
    return c50.scan_sessions(tree, c50f.TRAIN)


# ------------------------------------------------------------------------------ reading
def test_reads_every_frame_with_labels_from_the_object_number(tree, train):
    assert len(train) == len(c50f.TRAIN) * len(c50f.OBJECTS) * 5
    assert train.classes == [0, 1, 2] and train.objects == list(c50f.OBJECTS)
    np.testing.assert_array_equal(train.label, (train.object - 1) // 5)
    for i in (0, 7, len(train) - 1):
        s, o, f = int(train.session[i]), int(train.object[i]), int(train.frame[i])
        assert train.paths[i] == c50f.frame_path(tree, s, o, f)
    # sample order: session, then object, then frame
    keys = list(zip(train.session, train.object, train.frame))
    assert keys == sorted(keys)
    assert sorted(set(train.session.tolist())) == list(c50f.TRAIN)


def test_default_sessions_are_the_official_split():
    assert c50.TRAIN_SESSIONS == (1, 2, 4, 5, 6, 8, 9, 11)
    assert c50.TEST_SESSIONS == (3, 7, 10)
    assert c50.object_class(1) == 0 and c50.object_class(5) == 0 and c50.object_class(6) == 1
    assert c50.object_class(50) == 9


def test_load_core50_splits_by_session_and_never_opens_the_pickles(tree, monkeypatch):
    opened = []
    real_open = builtins.open

    def spy(path, *a, **k):
        opened.append(os.fspath(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", spy)
    train, test = c50.load_core50(tree, c50f.TRAIN, c50f.TEST, frame_step=1)
    assert set(test.session.tolist()) == {3} and 3 not in set(train.session.tolist())
    assert len(test) == len(c50f.OBJECTS) * 5
    assert not [p for p in opened if p.endswith(".pkl")]


def test_frame_step_keeps_every_nth_frame_of_each_video_by_rank(tmp_path):
    root = c50f.make_core50_tree(tmp_path / "c", objects=(1,), sessions=(1,), frames=7, size=8, first_frame=3)
    sub = c50.scan_sessions(root, [1], frame_step=3)
    assert sub.frame.tolist() == [3, 6, 9]  # ranks 0, 3, 6 of frames 3..9
    assert len(c50.scan_sessions(root, [1], frame_step=20)) == 1


def test_unrequested_session_folders_are_not_read(fresh):
    c50f.corrupt_frame(fresh, 4, 1, 0)
    os.remove(c50f.frame_path(fresh, 4, 2, 1))
    assert len(c50.scan_sessions(fresh, [1, 2])) == 2 * 6 * 3


def test_parse_sessions():
    assert c50.parse_sessions("1,2,4") == [1, 2, 4]
    assert c50.parse_sessions("s3, s7,s10") == [3, 7, 10]
    with pytest.raises(c50.Core50Error, match="comma-separated"):
        c50.parse_sessions("one,two")


# ---------------------------------------------------------------------------- bad trees
def _error(root, sessions=(1, 2, 3, 4), **kw):
    with pytest.raises(c50.Core50Error) as info:
        c50.scan_sessions(root, sessions, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    assert isinstance(info.value, InputError)
    return msg


def test_missing_root(tmp_path):
    assert "CORe50 folder not found" in _error(str(tmp_path / "nowhere"))


def test_missing_session(fresh):
    shutil.rmtree(os.path.join(fresh, "s3"))
    assert _error(fresh) == f"session folder not found: {os.path.join(fresh, 's3')}"


def test_stray_folder_in_root(fresh):
    os.makedirs(os.path.join(fresh, "extras"))
    msg = _error(fresh)
    assert "stray folder" in msg and os.path.join(fresh, "extras") in msg


def test_padded_session_folder_is_stray(fresh):
    os.rename(os.path.join(fresh, "s4"), os.path.join(fresh, "s04"))
    assert os.path.join(fresh, "s04") in _error(fresh, sessions=(1, 2, 3))


def test_stray_file_in_session_folder(fresh):
    open(os.path.join(fresh, "s2", "notes.txt"), "w").close()
    msg = _error(fresh)
    assert "stray file" in msg and os.path.join(fresh, "s2", "notes.txt") in msg


def test_stray_folder_in_session_folder(fresh):
    os.makedirs(os.path.join(fresh, "s2", "o01"))
    assert os.path.join(fresh, "s2", "o01") in _error(fresh)


def test_object_number_out_of_range(fresh):
    os.makedirs(os.path.join(fresh, "s1", "o51"))
    assert "o1..o50" in _error(fresh)


@pytest.mark.parametrize("name", ["C_01_01_0001.png", "C_1_01_001.png", "frame.png", "C_01_01_001.jpg"])
def test_stray_file_name_in_object_folder(fresh, name):
    path = os.path.join(fresh, "s1", "o1", name)
    open(path, "w").close()
    msg = _error(fresh)
    assert "stray file" in msg and path in msg


def test_stray_folder_in_object_folder(fresh):
    os.makedirs(os.path.join(fresh, "s1", "o1", "more"))
    assert os.path.join(fresh, "s1", "o1", "more") in _error(fresh)


def test_frame_named_for_another_object_or_session(fresh):
    wrong = os.path.join(fresh, "s2", "o6", "C_02_07_000.png")
    os.replace(c50f.frame_path(fresh, 2, 6, 0), wrong)
    msg = _error(fresh)
    assert wrong in msg and "session 2 object 7" in msg and "s2/o6" in msg
    wrong2 = os.path.join(fresh, "s2", "o6", "C_03_06_000.png")
    os.replace(wrong, wrong2)
    assert "session 3 object 6" in _error(fresh)


def test_object_folder_with_no_frames(fresh):
    folder = os.path.join(fresh, "s1", "o7")
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    assert _error(fresh) == f"object folder with no frames: {folder}"


def test_session_without_an_object_the_others_have(fresh):
    shutil.rmtree(os.path.join(fresh, "s3", "o12"))
    msg = _error(fresh)
    assert os.path.join(fresh, "s3") in msg and "o12" in msg


def test_class_with_no_objects(fresh):
    for s in c50f.SESSIONS:
        for o in (6, 7):
            shutil.rmtree(os.path.join(fresh, f"s{s}", f"o{o}"))
    msg = _error(fresh)
    assert msg.startswith("class 1 has no objects") and "o6..o10" in msg


def test_num_classes_asked_for_must_all_have_objects(fresh):
    assert "class 3 has no objects" in _error(fresh, num_classes=4)
    assert "2 classes were asked for" in _error(fresh, num_classes=2)


def test_train_and_test_sessions_must_not_overlap(fresh):
    with pytest.raises(c50.Core50Error, match="both a training and a test session"):
        c50.load_core50(fresh, (1, 2, 3), (3,))


def test_hidden_files_and_root_files_are_ignored(fresh):
    open(os.path.join(fresh, "s1", "o1", ".DS_Store"), "w").close()
    open(os.path.join(fresh, "README.txt"), "w").close()
    assert len(c50.scan_sessions(fresh, [1])) == 6 * 3


# ------------------------------------------------------------------------ unreadable frames
def test_unreadable_frame_is_an_error_naming_it_or_skipped_and_counted(fresh):
    bad = c50f.corrupt_frame(fresh, 2, 6, 1)
    samples = c50.scan_sessions(fresh, [1, 2])  # the name is fine: the scan does not open frames
    with pytest.raises(c50.Core50Error) as info:
        c50.check_frames(samples)
    assert bad in str(info.value) and "\n" not in str(info.value)
    kept, skipped = c50.check_frames(samples, skip_unreadable=True)
    assert len(kept) == len(samples) - 1 and len(skipped) == 1 and skipped[0].startswith(bad)
    assert bad not in kept.paths

    index = samples.paths.index(bad)
    ds = c50.Core50Dataset(samples)
    with pytest.raises(CorruptImageError, match=bad):
        ds[index]
    marked = c50.Core50Dataset(samples, mark_unreadable=True)[index]
    assert isinstance(marked[0], Unreadable) and marked[0].path == bad and marked[2] == index


# ------------------------------------------------------------------------------ orderings
def _runs(values):
    """Values of consecutive runs (a value repeated in two runs means it was not contiguous)."""
    values = list(values)
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


def _temporal(train, idx):
    keys = list(zip(train.session[idx], train.frame[idx]))
    return keys == sorted(keys)


@pytest.mark.parametrize("ordering", c50.ORDERINGS)
def test_every_ordering_is_a_seeded_permutation(train, ordering):
    a = c50.stream_order(train, ordering, seed=3)
    assert a.dtype == np.int64 and sorted(a.tolist()) == list(range(len(train)))
    np.testing.assert_array_equal(a, c50.stream_order(train, ordering, seed=3))
    assert not np.array_equal(a, c50.stream_order(train, ordering, seed=4)) or ordering == "instance"


def test_iid_mixes_classes(train):
    order = c50.stream_order(train, "iid", 0)
    assert len(_runs(train.label[order])) > len(train.classes)


def test_class_iid_classes_contiguous_and_shuffled_within(train):
    for seed in range(4):
        order = c50.stream_order(train, "class_iid", seed)
        runs = _runs(train.label[order])
        assert sorted(runs) == train.classes  # each class exactly one run
        for c in train.classes:
            assert not _temporal(train, order[train.label[order] == c])
    firsts = {tuple(_runs(train.label[c50.stream_order(train, "class_iid", s)])) for s in range(8)}
    assert len(firsts) > 1  # the class order depends on the seed


def test_instance_objects_contiguous_in_time_order(train):
    orders = set()
    for seed in range(6):
        order = c50.stream_order(train, "instance", seed)
        runs = _runs(train.object[order])
        assert sorted(runs) == train.objects
        for o in train.objects:
            idx = order[train.object[order] == o]
            assert _temporal(train, idx) and len(idx) == len(c50f.TRAIN) * 5
        orders.add(tuple(runs))
    assert len(orders) > 1


def test_class_instance_classes_then_objects_contiguous_in_time_order(train):
    orders = set()
    for seed in range(6):
        order = c50.stream_order(train, "class_instance", seed)
        assert sorted(_runs(train.label[order])) == train.classes
        runs = _runs(train.object[order])
        assert sorted(runs) == train.objects
        for o in train.objects:
            assert _temporal(train, order[train.object[order] == o])
        orders.add(tuple(runs))
    assert len(orders) > 1


def test_unknown_ordering(train):
    with pytest.raises(c50.Core50Error, match="unknown ordering 'random'"):
        c50.stream_order(train, "random", 0)


def test_first_appearance():
    assert c50.first_appearance([2, 2, 0, 1, 0, 2]) == [2, 0, 1]


# ------------------------------------------------------------------------------- protocol
def test_protocol_points_full_size_and_tiny():
    base, points = c50.protocol_points(6000)
    assert base == 600 and points == list(range(600, 6001, 600))
    assert c50.protocol_points(90) == (9, [9, 18, 27, 36, 45, 54, 63, 72, 81, 90])
    assert c50.protocol_points(72, base_fraction=0.25, eval_fraction=0.5) == (18, [18, 54, 72])
    with pytest.raises(c50.Core50Error, match="base initialisation share"):
        c50.protocol_points(100, base_fraction=1.0)
    with pytest.raises(c50.Core50Error, match="leaves 0"):
        c50.protocol_points(3, base_fraction=0.1)


# -------------------------------------------------------------------------------- dataset
def test_dataset_items_and_eval_transform(train):
    order = c50.stream_order(train, "instance", 0)[:5]
    ds = c50.Core50Dataset(train, order)
    assert len(ds) == 5
    x, y, idx = ds[2]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert idx == int(order[2]) and y == int(train.label[order[2]])
    # ImageNet normalisation of the whole frame, no crop
    raw = np.asarray(c50.pil_loader(train.paths[idx]), dtype=np.float32) / 255.0
    mean, std = np.array(c50.IMAGENET_MEAN), np.array(c50.IMAGENET_STD)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), (raw - mean) / std, rtol=1e-5, atol=1e-5)
    big = c50.Core50Dataset(train, order, transform=c50.eval_transform(32))
    assert big[0][0].shape == (3, 32, 32)
    with pytest.raises(c50.Core50Error, match="sample indices"):
        c50.Core50Dataset(train, [len(train)])
