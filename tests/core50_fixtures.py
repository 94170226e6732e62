"""A tiny CORe50 tree in the official layout and naming, for tests.

- ``make_core50_tree(root, objects, sessions, frames, size, seed, first_frame, pickles) -> str``:
  ``root/s<S>/o<O>/C_<SS>_<OO>_<FFF>.png`` for every session and object (RGB PNGs whose colour
  depends on the class, with a per-object tint and noise, so a network can learn the classes).
  With ``pickles`` it also puts the download's ``paths.pkl``, ``labels.pkl`` and ``LUP.pkl`` in
  the root, filled with bytes that fail to unpickle: a reader that opened them would fail.
- ``frame_path(root, session, obj, frame)``: where a frame lives.
- ``corrupt_frame(root, session, obj, frame)``: overwrite a frame with bytes PIL cannot read.

Defaults: objects 1, 2 (class 0), 6, 7 (class 1), 11, 12 (class 2); sessions 1, 2, 3, 4 (use
train (1, 2, 4) and test (3,)); 5 frames per video numbered from 0; 16 px frames.
"""
import os

import numpy as np
from PIL import Image

OBJECTS = (1, 2, 6, 7, 11, 12)
SESSIONS = (1, 2, 3, 4)
TRAIN = (1, 2, 4)
TEST = (3,)
PICKLES = ("paths.pkl", "labels.pkl", "LUP.pkl")


def frame_path(root, session, obj, frame):
    return os.path.join(root, f"s{session}", f"o{obj}", f"C_{session:02d}_{obj:02d}_{frame:03d}.png")


def _frame(rng, obj, size):
    cls = (obj - 1) // 5
    base = np.array([(cls * 90) % 256, (cls * 160 + 50) % 256, (240 - cls * 70) % 256])
    tint = np.array([obj * 7 % 20, obj * 13 % 20, obj * 3 % 20])
    noise = rng.integers(-30, 30, size=(size, size, 3))
    return Image.fromarray(np.clip(base + tint + noise, 0, 255).astype(np.uint8), "RGB")


def make_core50_tree(root, objects=OBJECTS, sessions=SESSIONS, frames=5, size=16, seed=0, first_frame=0,
                     pickles=True):
    rng = np.random.default_rng(seed)
    root = str(root)
    for s in sessions:
        for o in objects:
            os.makedirs(os.path.join(root, f"s{s}", f"o{o}"), exist_ok=True)
            for f in range(first_frame, first_frame + frames):
                _frame(rng, o, size).save(frame_path(root, s, o, f))
    if pickles:
        for name in PICKLES:
            with open(os.path.join(root, name), "wb") as fh:
                fh.write(b"\x80\x04not a pickle: a reader must never open this")
    return root


def corrupt_frame(root, session, obj, frame):
    path = frame_path(root, session, obj, frame)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n truncated garbage")
    return path
