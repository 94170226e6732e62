"""Tiny ImageNet-style trees in the real on-disk layouts, and helpers to run the IC scripts.

Functions:

- ``make_imagenet_tree(root, classes, n_train, n_val, size) -> str``: ``root/train/<wnid>/*.png``
  and ``root/val/<wnid>/*.png`` (RGB PNGs whose colour depends on the class, so a network can
  learn them); returns ``root``.
- ``make_flat_val(root, tree) -> (val_dir_root, csv_path)``: the same val images in Kaggle's flat
  layout (``<root>/val/ILSVRC2012_val_<8 digits>.JPEG``, real JPEGs, names in shuffled class order)
  with ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the string starts with the wnid).
- ``run_script(name, *args, env=None, timeout=...)``: ``subprocess.run`` of a script with
  ``sys.executable``, one thread per process, captured text output (for exit statuses, torchrun
  and the bash drivers).
- ``run_main(name, *args)``: the same script's ``main`` in this process, as ``remind.runtime.run_cli``
  runs it from a shell: a ``CompletedProcess`` with the exit status and the captured stdout and
  stderr, without the seconds an interpreter start and the imports take.
- ``assert_clean_error(proc, *fragments)``: non-zero exit, no Python traceback on stderr, and
  every fragment in stderr.
"""
import contextlib
import csv
import importlib
import io
import os
import subprocess
import sys

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO_ROOT, "image_classification_experiments")

CLASSES = ["n01440764", "n01443537", "n01484850", "n01491361"]


def _image(rng, cls_idx, size):
    base = np.array([(cls_idx * 70) % 256, (cls_idx * 150 + 40) % 256, (255 - cls_idx * 60) % 256])
    noise = rng.integers(-40, 40, size=(size, size, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def make_imagenet_tree(root, classes=CLASSES, n_train=10, n_val=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(classes):
            d = os.path.join(root, split, wnid)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                _image(rng, c, size).save(os.path.join(d, f"{wnid}_{split}_{i:04d}.png"))
    return str(root)


def make_flat_val(root, tree, seed=1):
    """Flat val copy of ``tree``'s val images plus LOC_val_solution.csv; returns (root, csv)."""
    rng = np.random.default_rng(seed)
    val = os.path.join(tree, "val")
    items = [(wnid, f) for wnid in sorted(os.listdir(val)) for f in sorted(os.listdir(os.path.join(val, wnid)))]
    order = rng.permutation(len(items))
    flat = os.path.join(root, "val")
    os.makedirs(flat, exist_ok=True)
    rows = []
    for k, j in enumerate(order, start=1):
        wnid, fname = items[j]
        image_id = f"ILSVRC2012_val_{k:08d}"
        Image.open(os.path.join(val, wnid, fname)).convert("RGB").save(
            os.path.join(flat, image_id + ".JPEG"), format="JPEG")
        rows.append((image_id, f"{wnid} 10 12 30 31 {wnid} 1 2 20 22"))
    csv_path = os.path.join(root, "LOC_val_solution.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        w.writerows(sorted(rows))
    # Reuse the train folder of the tree so the flat layout forms a full dataset root.
    os.symlink(os.path.join(tree, "train"), os.path.join(root, "train"))
    return str(root), csv_path


def write_order(path, classes):
    with open(path, "w") as f:
        f.write("\n".join(classes) + "\n")
    return str(path)


def script_env(extra=None):
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def run_script(name, *args, env=None, timeout=300, cwd=None):
    cmd = [sys.executable, os.path.join(SCRIPTS, name)] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, env=script_env(env),
                          timeout=timeout, cwd=cwd)


def run_main(name, *args):
    module = importlib.import_module("image_classification_experiments." + name.removesuffix(".py"))
    from remind.runtime import run_cli

    argv = [str(a) for a in args]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cli(module.main, argv, prog=name)
        except SystemExit as exit_:
            code = exit_.code
    rc = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess([name, *argv], rc, out.getvalue(), err.getvalue())


def assert_ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def assert_clean_error(proc, *fragments):
    assert proc.returncode != 0, f"expected a failure\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    for frag in fragments:
        assert frag in proc.stderr, f"{frag!r} not in stderr:\n{proc.stderr}"
