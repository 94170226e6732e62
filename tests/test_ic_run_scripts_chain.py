"""The two ImageNet run scripts chain: train_base_init_network.sh, then run_imagenet_experiment.sh,
run from the same directory with only the data path (and sizes, to be quick) set, find each other's
files: the stream reads the checkpoint and the base-init cache (PQ and codes) the base init wrote,
and computes nothing of the base init again."""
import json
import os
import subprocess
import sys

import ic_fixtures as icf

ORDER = [icf.CLASSES[i] for i in (2, 0, 3, 1)]
# Environment that only shrinks the runs (image size, epochs, classes, PQ, replay, workers).
SHRINK = {"IMAGE_SIZE": "32", "NUM_CLASSES": "4", "WORKERS": "0", "SEED": "1", "PYTHON": sys.executable}
BASE = {"BASE_MAX_CLASS": "2", "EPOCHS": "1", "BATCH_SIZE": "8", "CLASS_ORDER": "order.txt",
        "TRAIN_ARGS": "--device cpu", "EXTRACT_ARGS": "--device cpu",
        "PQ_ARGS": "--num_codebooks 8 --codebook_size 8 --device cpu"}
STREAM = {"BASE_INIT_CLASSES": "2", "CLASS_INCREMENT": "2", "NUM_CODEBOOKS": "8", "CODEBOOK_SIZE": "8",
          "REPLAY_SAMPLES": "4", "NUM_WORKERS": "0", "DEVICE": "cpu", "MAX_BUFFER_SIZE": "100"}


def run_sh(name, cwd, env):
    proc = subprocess.run(["bash", os.path.join(icf.SCRIPTS, name)], cwd=cwd, capture_output=True,
                          text=True, env=icf.script_env(env), timeout=300)
    icf.assert_ok(proc)
    return proc


def test_base_init_script_then_stream_script(tmp_path, make_imagenet_tree):
    make_imagenet_tree(tmp_path / "data" / "imagenet", n_train=4, n_val=2, size=32)
    icf.write_order(tmp_path / "order.txt", ORDER)
    run_sh("train_base_init_network.sh", tmp_path, {**SHRINK, **BASE})
    base = tmp_path / "runs" / "base_init"
    ckpt = base / "best_ResNet18ClassifyAfterLayer4_1_2.pth"
    cache = [base / name for name in ("base_init_features.h5", "pq.npz", "base_init_codes.h5")]
    assert ckpt.is_file() and all(p.is_file() for p in cache)
    stamps = [p.stat().st_mtime_ns for p in cache]

    proc = run_sh("run_imagenet_experiment.sh", tmp_path, {**SHRINK, **STREAM})
    out = tmp_path / "streaming_experiments" / "remind_imagenet"
    config = json.loads((out / "config.json").read_text())
    assert os.path.samefile(tmp_path / config["classifier_ckpt"], ckpt)
    assert os.path.samefile(tmp_path / config["base_init_dir"], base)
    assert [p.stat().st_mtime_ns for p in cache] == stamps  # the cache was used, not made again
    assert "no cached codes" not in proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert [e["max_class"] for e in results["evaluations"]] == [2, 4]
