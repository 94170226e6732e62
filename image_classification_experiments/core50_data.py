"""CORe50 read from the official download, its four stream orderings, and a torch dataset.

Layout (``core50_128x128.zip`` as unpacked): ``<root>/s1..s11/o1..o50/C_<ss>_<oo>_<fff>.png``;
folder names are unpadded, file names carry the 2-digit session and object and the 3-digit frame.
The 50 objects form 10 classes of 5: class = (object - 1) // 5. Training sessions s1 s2 s4 s5 s6
s8 s9 s11, test sessions s3 s7 s10 (both are arguments). The download's ``paths.pkl``,
``labels.pkl`` and ``LUP.pkl`` are never opened: everything comes from the file names, and files
directly in the root are ignored. Names starting with "." are ignored everywhere.

The tree is checked while it is read; each problem is one ``Core50Error`` line naming the path:
a missing root or session folder, a stray entry (a folder that is not sN / oN, a file whose name
does not fit the pattern, a file where folders belong), a session without an object the others
have, a class with no objects, an object folder with no frames, and a frame whose name names
another session or object than its folders. Unreadable frames are found when they are loaded
(``check_frames`` up front, or ``Core50Dataset(mark_unreadable=True)`` with the ImageNet
loaders' tally): counted and skipped when asked, otherwise one error naming the file.

Protocol (docs/core50.md says where each value comes from; every one is an argument):
- frames subsampled to 1 per second of the 20 fps videos (``frame_step=20``: the 1st, 21st,
  41st, ... frame of each session-object video, by rank): 600 training and 225 test frames
  per class on the full data set;
- the base initialisation uses the first 10% of the ordered stream (``base_fraction``), and the
  model is evaluated after it and after every further 10% of the training set
  (``eval_fraction``): ``protocol_points``.

Sample order (the "sample index" of every item): session, then object, then frame number.
"""
import os
import re
from dataclasses import dataclass

import numpy as np
import remind  # noqa: F401  (makes torchvision importable beside a CPU-only torch)
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from image_classification_experiments.imagenet_data import (IMAGENET_MEAN, IMAGENET_STD, CorruptImageError,
                                                            Unreadable, pil_loader)
from image_classification_experiments.imagenet_folders import DataError

TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)
TEST_SESSIONS = (3, 7, 10)
NUM_OBJECTS = 50
OBJECTS_PER_CLASS = 5
NUM_CLASSES = NUM_OBJECTS // OBJECTS_PER_CLASS
FPS = 20
DEFAULT_FRAME_STEP = 20  # 1 frame per second
DEFAULT_BASE_FRACTION = 0.1
DEFAULT_EVAL_FRACTION = 0.1
ORDERINGS = ("iid", "class_iid", "instance", "class_instance")

SESSION_DIR = re.compile(r"s([1-9][0-9]*)")
OBJECT_DIR = re.compile(r"o([1-9][0-9]*)")
FRAME_FILE = re.compile(r"C_([0-9]{2})_([0-9]{2})_([0-9]{3})\.png")


class Core50Error(DataError):
    """A CORe50 tree that is not the official layout, or a frame that cannot be read."""


def object_class(obj):
    """Class of an object number (1..50) -> 0..9; works on arrays too."""
    return (np.asarray(obj) - 1) // OBJECTS_PER_CLASS


@dataclass
class Core50Samples:
    """The frames of some sessions, one row per frame, in sample order (session, object, frame)."""

    root: str
    paths: list
    session: np.ndarray
    object: np.ndarray
    frame: np.ndarray
    label: np.ndarray

    def __len__(self):
        return len(self.paths)

    def subset(self, indices):
        """Rows ``indices`` (in that order) as a new ``Core50Samples``."""
        idx = np.asarray(indices, dtype=np.int64)
        return Core50Samples(self.root, [self.paths[i] for i in idx], self.session[idx],
                             self.object[idx], self.frame[idx], self.label[idx])

    @property
    def classes(self):
        return sorted(int(c) for c in np.unique(self.label))

    @property
    def objects(self):
        return sorted(int(o) for o in np.unique(self.object))


# ------------------------------------------------------------------------------- the tree
def _entries(folder):
    """Visible entries of a folder as (name, is_dir), sorted by name."""
    try:
        with os.scandir(folder) as it:
            return sorted((e.name, e.is_dir()) for e in it if not e.name.startswith("."))
    except OSError as err:
        raise Core50Error(f"cannot list {folder}: {err.strerror or err}") from None


def _stray(path, what):
    raise Core50Error(f"stray {what} in the CORe50 tree: {path} (expected the official layout "
                      "<root>/sN/oN/C_<ss>_<oo>_<fff>.png)")


def _numbered(pattern, name):
    match = pattern.fullmatch(name)
    return int(match.group(1)) if match else None


def check_root(root, sessions):
    """Every folder directly in ``root`` is sN; each wanted session folder exists."""
    if not os.path.isdir(root):
        raise Core50Error(f"CORe50 folder not found: {root} (expected the unpacked core50_128x128)")
    found = set()
    for name, is_dir in _entries(root):
        if not is_dir:
            continue  # the download's pickles and readme; never read
        number = _numbered(SESSION_DIR, name)
        if number is None:
            _stray(os.path.join(root, name), "folder")
        found.add(number)
    for s in sessions:
        if s not in found:
            raise Core50Error(f"session folder not found: {os.path.join(root, f's{s}')}")


def scan_object(folder, session, obj):
    """(frame numbers, file names) of one session-object video, sorted by frame number."""
    frames = []
    for name, is_dir in _entries(folder):
        path = os.path.join(folder, name)
        match = None if is_dir else FRAME_FILE.fullmatch(name)
        if match is None:
            _stray(path, "folder" if is_dir else "file")
        ss, oo, fff = (int(g) for g in match.groups())
        if (ss, oo) != (session, obj):
            raise Core50Error(f"{path}: the name says session {ss} object {oo} but the file is in "
                              f"s{session}/o{obj}")
        frames.append((fff, name))
    if not frames:
        raise Core50Error(f"object folder with no frames: {folder}")
    return sorted(frames)


def scan_session(root, session):
    """{object: [(frame, file name)]} of one session folder."""
    folder = os.path.join(root, f"s{session}")
    videos = {}
    for name, is_dir in _entries(folder):
        path = os.path.join(folder, name)
        obj = _numbered(OBJECT_DIR, name) if is_dir else None
        if obj is None:
            _stray(path, "folder" if is_dir else "file")
        if obj > NUM_OBJECTS:
            raise Core50Error(f"{path}: CORe50 has objects o1..o{NUM_OBJECTS}")
        videos[obj] = scan_object(path, session, obj)
    return videos


def check_objects(root, per_session, num_classes=None):
    """Every session holds the same objects, and every class 0..K-1 has at least one."""
    sessions = list(per_session)
    reference = set(per_session[sessions[0]])
    for s in sessions:
        objects = set(per_session[s])
        missing = sorted(reference - objects) or sorted(objects - reference)
        if missing:
            where, other = (s, sessions[0]) if reference - objects else (sessions[0], s)
            raise Core50Error(f"{os.path.join(root, f's{where}')} lacks object folder o{missing[0]} "
                              f"that s{other} has ({len(missing)} object(s) differ)")
    if not reference:
        raise Core50Error(f"no object folders in {os.path.join(root, f's{sessions[0]}')}")
    classes = {int(object_class(o)) for o in reference}
    k = num_classes if num_classes is not None else max(classes) + 1
    for c in range(k):
        if c not in classes:
            first = c * OBJECTS_PER_CLASS + 1
            raise Core50Error(f"class {c} has no objects: none of o{first}..o{first + OBJECTS_PER_CLASS - 1} "
                              f"in {os.path.join(root, f's{sessions[0]}')}")
    extra = sorted(c for c in classes if c >= k)
    if extra:
        raise Core50Error(f"{root}: objects of class {extra[0]} found, but {k} classes were asked for")


def scan_sessions(root, sessions, frame_step=1, num_classes=None):
    """``Core50Samples`` of ``sessions``, every ``frame_step``-th frame of each video (by rank)."""
    sessions = _session_list(sessions, "sessions")
    if frame_step < 1:
        raise Core50Error(f"frame step must be at least 1, got {frame_step}")
    check_root(root, sessions)
    per_session = {s: scan_session(root, s) for s in sorted(sessions)}
    check_objects(root, per_session, num_classes)
    rows = [(s, o, fff, os.path.join(root, f"s{s}", f"o{o}", name))
            for s in sorted(per_session) for o in sorted(per_session[s])
            for fff, name in per_session[s][o][::frame_step]]
    session, obj, frame, paths = zip(*rows)
    obj = np.array(obj, dtype=np.int64)
    return Core50Samples(root, list(paths), np.array(session, dtype=np.int64), obj,
                         np.array(frame, dtype=np.int64), object_class(obj).astype(np.int64))


def _session_list(sessions, what):
    sessions = [int(s) for s in sessions]
    if not sessions:
        raise Core50Error(f"no {what} given")
    if len(set(sessions)) != len(sessions):
        raise Core50Error(f"{what} listed twice: {sessions}")
    if min(sessions) < 1:
        raise Core50Error(f"{what}: session numbers start at 1, got {sessions}")
    return sessions


def load_core50(root, train_sessions=TRAIN_SESSIONS, test_sessions=TEST_SESSIONS,
                frame_step=DEFAULT_FRAME_STEP, num_classes=None):
    """(train, test) ``Core50Samples``; both splits must hold the same objects and classes."""
    overlap = sorted(set(map(int, train_sessions)) & set(map(int, test_sessions)))
    if overlap:
        raise Core50Error(f"session s{overlap[0]} is both a training and a test session")
    train = scan_sessions(root, train_sessions, frame_step, num_classes)
    test = scan_sessions(root, test_sessions, frame_step, num_classes)
    if train.objects != test.objects:
        diff = sorted(set(train.objects) ^ set(test.objects))
        raise Core50Error(f"{root}: object o{diff[0]} is in the training sessions but not the test "
                          "sessions or the other way round")
    return train, test


def parse_sessions(text):
    """'1,2,4' or 's1,s2,s4' (a command-line flag) -> [1, 2, 4]."""
    try:
        return [int(part.strip().lstrip("sS")) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise Core50Error(f"sessions {text!r}: expected a comma-separated list such as 1,2,4") from None


# ------------------------------------------------------------------------ unreadable frames
def frame_problem(path):
    """None if PIL can open and verify the file, else a one-line reason."""
    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        return text
    return None


def check_frames(samples, skip_unreadable=False):
    """(kept samples, ["path (reason)" of each skipped frame]); without ``skip_unreadable`` the
    first unreadable frame is an error naming it."""
    keep, skipped = [], []
    for i, path in enumerate(samples.paths):
        reason = frame_problem(path)
        if reason is None:
            keep.append(i)
        elif skip_unreadable:
            skipped.append(f"{path} ({reason})")
        else:
            raise Core50Error(f"cannot read frame {path}: {reason} (skip unreadable frames to go on "
                              "without it)")
    return samples.subset(keep), skipped


# ------------------------------------------------------------------------------ orderings
def _temporal(samples, idx):
    """``idx`` sorted by session, then frame number (the order the frames were filmed)."""
    idx = np.asarray(idx, dtype=np.int64)
    return idx[np.lexsort((samples.frame[idx], samples.session[idx]))]


def order_iid(samples, seed):
    """Every training frame once, shuffled."""
    return np.random.default_rng(seed).permutation(len(samples)).astype(np.int64)


def order_class_iid(samples, seed):
    """Classes one by one in a seeded order; a class's frames shuffled."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(samples.label))
    return np.concatenate([rng.permutation(np.flatnonzero(samples.label == c)) for c in classes])


def order_instance(samples, seed):
    """Objects one after another in a seeded order; an object's frames in temporal order."""
    rng = np.random.default_rng(seed)
    objects = rng.permutation(np.unique(samples.object))
    return np.concatenate([_temporal(samples, np.flatnonzero(samples.object == o)) for o in objects])


def order_class_instance(samples, seed):
    """Classes one by one (seeded); within a class its objects one after another (seeded), each
    object's frames in temporal order."""
    rng = np.random.default_rng(seed)
    parts = []
    for c in rng.permutation(np.unique(samples.label)):
        for o in rng.permutation(np.unique(samples.object[samples.label == c])):
            parts.append(_temporal(samples, np.flatnonzero(samples.object == o)))
    return np.concatenate(parts)


ORDER_FUNCTIONS = {"iid": order_iid, "class_iid": order_class_iid, "instance": order_instance,
                   "class_instance": order_class_instance}


def stream_order(samples, ordering, seed):
    """Indices into ``samples`` (each once) in the named ordering; same seed, same order."""
    if ordering not in ORDER_FUNCTIONS:
        raise Core50Error(f"unknown ordering {ordering!r}; choose one of {', '.join(ORDERINGS)}")
    return ORDER_FUNCTIONS[ordering](samples, seed).astype(np.int64)


def first_appearance(values):
    """The distinct values of a sequence in the order they first appear (e.g. classes of a stream)."""
    values = np.asarray(values)
    _, first = np.unique(values, return_index=True)
    return [v.item() for v in values[np.sort(first)]]


# ------------------------------------------------------------------------------- protocol
def protocol_points(num_train, base_fraction=DEFAULT_BASE_FRACTION, eval_fraction=DEFAULT_EVAL_FRACTION):
    """(base_count, evaluation points): the first ``base_count`` stream items initialise the
    model; it is evaluated when this many training items have been seen: after the base
    initialisation, after every further ``eval_fraction`` of the training set, and at the end."""
    if not 0 < base_fraction < 1:
        raise Core50Error(f"base initialisation share must be in (0, 1), got {base_fraction}")
    if not 0 < eval_fraction <= 1:
        raise Core50Error(f"evaluation interval share must be in (0, 1], got {eval_fraction}")
    base = int(round(num_train * base_fraction))
    if not 0 < base < num_train:
        raise Core50Error(f"{num_train} training frames: a base share of {base_fraction} leaves "
                          f"{base} for the base initialisation and {num_train - base} to stream")
    step = max(1, int(round(num_train * eval_fraction)))
    points = list(range(base, num_train, step))
    return base, points + [num_train]


# ------------------------------------------------------------------------------ torch side
def eval_transform(image_size=None):
    """Tensor + ImageNet normalisation of a whole frame; resized to ``image_size`` if given (no
    crop: the 128 px frames are centred on the object, a resize-and-crop would cut it)."""
    steps = [transforms.Resize((image_size, image_size))] if image_size else []
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class Core50Dataset(Dataset):
    """``samples[indices]`` (all, in sample order, by default) as ``(image, class label, sample
    index)``; ``transform`` defaults to ``eval_transform()``.

    An unreadable frame raises ``CorruptImageError`` naming it, or with ``mark_unreadable`` comes
    back as an ``imagenet_data.Unreadable`` marker for ``collate_marking`` / ``UnreadableTally``
    (the ImageNet loaders' way of counting and skipping).
    """

    def __init__(self, samples, indices=None, transform=None, mark_unreadable=False):
        self.samples = samples
        self.indices = (np.arange(len(samples), dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64))
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(samples)):
            raise Core50Error(f"sample indices outside 0..{len(samples) - 1}")
        self.transform = transform if transform is not None else eval_transform()
        self.mark_unreadable = mark_unreadable

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        index = int(self.indices[i])
        path, label = self.samples.paths[index], int(self.samples.label[index])
        try:
            img = pil_loader(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            if not self.mark_unreadable:
                raise CorruptImageError(f"cannot read frame {path}: {reason}") from None
            return Unreadable(path, reason), label, index
        return self.transform(img), label, index
