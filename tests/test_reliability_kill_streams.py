"""Kill tests of the image-classification streams (imagenet_experiment.py, core50_experiment.py):
a short seeded CPU run is SIGKILLed during base-init feature extraction, mid-step, mid-evaluation
and mid-checkpoint-write, resumed with --resume each time, and must end with byte-identical
results.json, results.csv, accuracies, predictions and plot files, and equal F weights and
optimizer at every point, as an uninterrupted run. A full disk while saving and a damaged newest
checkpoint are tested here too.

Each killed process is a fork of this test process that runs the script's ``main`` as the shell
would (``remind.runtime.run_cli``): a real process, killed by a real SIGKILL, without the seconds
an interpreter start and the imports take (the ``REMIND_FAULT_INJECT`` hook and the output line
waits of kill_helpers.py work the same). The helpers are kill_helpers.py's."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback

import numpy as np
import pytest
import torch
from tqdm import tqdm

import core50_fixtures as c50f
import ic_fixtures as icf
import kill_helpers as kh

RESULTS = ["results.json", "results.csv", "accuracies_*.json", "preds_*", "accuracy_plot.png"]
CHANGE_PER_PROCESS = ("save_dir", "base_init_dir", "resume", "keep_states")  # and what follows from save_dir


def _quiet_threads():
    """No thread but this one may hold a lock at a fork (the child would wait for it forever):
    tqdm's monitor thread, which wakes every 10 s and takes tqdm's write lock, is stopped and not
    started again."""
    tqdm.monitor_interval = 0
    if tqdm.monitor is not None:
        tqdm.monitor.exit()
        tqdm.monitor = None


def _fresh_tqdm_locks():
    """In the child: tqdm's write locks anew. Its thread lock may be a copy of one another thread
    held, and its process lock is a semaphore shared with every fork: one that an earlier child
    held when it was killed is held forever."""
    import multiprocessing

    from tqdm import std

    std.TqdmDefaultWriteLock.th_lock = threading.RLock()
    std.TqdmDefaultWriteLock.mp_lock = multiprocessing.RLock()
    std.tqdm._lock = std.TqdmDefaultWriteLock()


class ForkedProcess:
    """The ``subprocess.Popen`` surface kill_helpers uses (stdout, poll, wait, send_signal,
    returncode), for a forked child that runs ``run_cli(main, argv)`` and exits with its status."""

    def __init__(self, main, argv, env):
        from remind.runtime import run_cli

        _quiet_threads()
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            code = 1
            try:
                _fresh_tqdm_locks()
                os.close(read_end)
                os.dup2(write_end, 1)
                os.dup2(write_end, 2)
                sys.stdout = sys.stderr = open(write_end, "w", buffering=1, closefd=False)
                os.environ.update(env)
                run_cli(main, argv)
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        os.close(write_end)
        self.stdout = open(read_end, "r")
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)


def fork_script(main, argv, fault=None, pause_s=kh.DEFAULT_TIMEOUT):
    """A kill_helpers ``Running`` of ``main(argv)`` in a forked child (fault: REMIND_FAULT_INJECT)."""
    env = {kh.FAULT_ENV: fault or "", kh.PAUSE_ENV: str(pause_s)}
    return kh.Running(ForkedProcess(main, [str(a) for a in argv], env))


def kill_at(main, argv, point, timeout=kh.DEFAULT_TIMEOUT):
    """kill_helpers.kill_at for a forked run: kill it at ``point``; returns its output."""
    run = fork_script(main, argv, point.fault, getattr(point, "pause_s", kh.DEFAULT_TIMEOUT))
    if point.self_kill:
        rc = run.finish(timeout)
        assert rc == -signal.SIGKILL, f"{point}: expected the process to kill itself, exit status {rc}:\n{run.output}"
        return run.output
    run.wait_for(point.wait_for, timeout)
    time.sleep(point.delay)
    assert run.proc.poll() is None, f"{point}: ended (status {run.proc.returncode}) before the kill:\n{run.output}"
    run.kill()
    return run.output


def interrupt_and_resume(main, argv, points):
    """Kill a run at each point in turn (every process with --resume), then run it to its end."""
    outputs = [kill_at(main, [*argv, "--resume"], point) for point in points]
    run = fork_script(main, [*argv, "--resume"])
    rc = run.finish(kh.DEFAULT_TIMEOUT)
    assert rc == 0, f"exit status {rc}; output:\n{run.output}"
    return outputs + [run.output]


def mid_step(n_checkpoint):
    """SIGKILL 0.05 s after the ``n_checkpoint``-th write of latest.pt in the process began (it
    announces itself by a pause of 0 s): the run is streaming the next steps then (or, on a slow
    machine, still writing that checkpoint: a kill point as good)."""
    point = kh.KillPoint(f"mid-step after checkpoint {n_checkpoint}", fault=f"pause:{n_checkpoint}:latest.pt",
                         wait_for=kh.PAUSED_LINE, delay=0.05)
    point.pause_s = 0
    return point


def assert_progress(outputs, resumed):
    """The last ``resumed`` processes resume from checkpoints further and further on (so the kill
    points are hit in different parts of the run, not all at its start; a time-based kill may
    reach the next one's checkpoint: two equal at most)."""
    steps = [int(m.group(1)) for out in outputs for m in [re.search(r"(\d+) streamed so far", out)] if m]
    assert len(steps) == resumed and steps == sorted(steps) and len(set(steps)) >= resumed - 1, steps


def _as_tensors(obj):
    """numpy arrays -> tensors, recursively (a preds file may hold the reference's numpy array)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, dict):
        return {k: _as_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_as_tensors(v) for v in obj]
    return obj


def assert_same_run(whole, killed, points):
    """Byte-identical results files; equal predictions and F (weights and optimizer) at every
    point (``points``: the F file keys); the same config.json but for per-process flags."""
    kh.assert_same_files(whole, killed, RESULTS)
    preds = sorted(n for n in os.listdir(whole) if n.startswith("preds_"))
    assert preds and preds == sorted(n for n in os.listdir(killed) if n.startswith("preds_"))
    for name in preds + [f"remind_model/remind_classifier_F_{p}.pth" for p in points]:
        # our own files: preds may hold a numpy array (the reference's layout), not weights_only-loadable
        a, b = (_as_tensors(torch.load(os.path.join(d, name), weights_only=False)) for d in (whole, killed))
        kh.assert_same_tensors(a, b, name)
    ca, cb = (json.load(open(os.path.join(d, "config.json"))) for d in (whole, killed))
    assert {k: v for k, v in ca.items() if k not in CHANGE_PER_PROCESS} == \
        {k: v for k, v in cb.items() if k not in CHANGE_PER_PROCESS}
    kh.assert_no_temp_files(killed)


# ---------------------------------------------------------------------------------- ImageNet
IC_CLASSES = icf.CLASSES + ["n01494475", "n01496331"]


@pytest.fixture(scope="module")
def imagenet_inputs(tmp_path_factory):
    """A 6-class tree (2 base classes, 2 chunks of 2), its label files and a base network."""
    from image_classification_experiments.make_numpy_imagenet_label_files import make_label_files

    root = tmp_path_factory.mktemp("ic_kill")
    data = icf.make_imagenet_tree(root / "data", classes=IC_CLASSES, n_train=12, n_val=2, size=32)
    make_label_files(data, str(root / "labels"), icf.write_order(root / "order.txt", IC_CLASSES))
    icf.assert_ok(icf.run_main("train_base_init_network_from_scratch.py", "--data", data, "--labels_dir",
                               root / "labels", "--base_max_class", 2, "--num_classes", 6, "--epochs", 1, "-b", 12,
                               "--device", "cpu", "--image_size", 32, "-j", 0, "--save_dir", root / "base",
                               "--num_threads", 1, "--progress", "off"))
    return {"root": root, "args": [
        "--images_dir", data, "--label_dir", root / "labels",
        "--classifier_ckpt", root / "base" / "best_ResNet18ClassifyAfterLayer4_1.pth",
        "--num_classes", 6, "--base_init_classes", 2, "--streaming_min_class", 2, "--streaming_max_class", 6,
        "--class_increment", 2, "--image_size", 32, "--extract_features_from", "layer4.1", "--classifier", "fc",
        "--num_codebooks", 8, "--codebook_size", 16, "--rehearsal_samples", 4, "--random_resized_crops",
        "--use_mixup", "--device", "cpu", "--num_workers", 0, "--batch_size", 6, "--seed", 3,
        "--num_threads", 1, "--progress", "off", "--checkpoint_interval", 5]}


@pytest.fixture(scope="module")
def imagenet_whole(imagenet_inputs):
    """The uninterrupted run."""
    whole = imagenet_inputs["root"] / "whole"
    icf.assert_ok(icf.run_main("imagenet_experiment.py", *imagenet_inputs["args"], "--save_dir", whole))
    return whole


def test_imagenet_stream_survives_kills(imagenet_inputs, imagenet_whole):
    from image_classification_experiments import imagenet_experiment

    root, args, whole = imagenet_inputs["root"], imagenet_inputs["args"], imagenet_whole
    killed = root / "killed"
    # 2 chunks of 24 images; checkpoints at the base point, every 5 steps and after each chunk
    outputs = interrupt_and_resume(imagenet_experiment.main, [*args, "--save_dir", killed, "--keep_states", 1], [
        kh.KillPoint.in_write(1, "base_init_features.h5"),         # base-init feature extraction
        mid_step(2),                                               # streaming steps 6.. of chunk 1
        kh.KillPoint.paused_write(1, "results.json"),             # writing the outputs of the point after chunk 1
        kh.KillPoint.in_write(2, "latest.pt"),                     # writing the checkpoint of step 25
        kh.KillPoint.in_write(1, "remind_classifier_F_*")])        # writing F after chunk 2
    assert_progress(outputs, 4)
    assert_same_run(whole, killed, (2, 4, 6))
    assert sorted(os.listdir(killed / "remind_model")) == [  # --keep_states 1: the last point's state only
        "remind_classifier_F_2.pth", "remind_classifier_F_4.pth", "remind_classifier_F_6.pth", "remind_state_6.pt"]
    assert "streaming took" in outputs[-1]


def test_imagenet_stream_full_disk_stops_with_one_line_and_resumes(imagenet_inputs, imagenet_whole, monkeypatch):
    """No space left while writing a checkpoint (REMIND_FAULT_INJECT=enospc): one line, exit 2, the
    previous checkpoint intact; --resume then ends as the uninterrupted run."""
    args, out = imagenet_inputs["args"], imagenet_inputs["root"] / "full_disk"
    monkeypatch.setenv(kh.FAULT_ENV, "enospc:4:latest.pt")  # the checkpoint of step 15
    proc = icf.run_main("imagenet_experiment.py", *args, "--save_dir", out)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"imagenet_experiment.py: error: {out / 'checkpoints' / 'latest.pt'}: no space left on device while saving; "
        "the previous checkpoint is intact")
    monkeypatch.delenv(kh.FAULT_ENV)
    before = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)["run_seconds"]
    proc = icf.run_main("imagenet_experiment.py", *args, "--save_dir", out, "--resume")
    icf.assert_ok(proc)
    assert "segment 2, 10 samples into it" in proc.stdout
    took = float(re.search(r"streaming took ([0-9.]+) s \(all of the run's processes\)", proc.stdout).group(1))
    assert 0 < before <= took + 0.05  # the first process's streaming time is counted too
    assert_same_run(imagenet_whole, out, (2, 4, 6))


def test_imagenet_stream_falls_back_to_the_previous_checkpoint(imagenet_inputs, imagenet_whole):
    """A damaged latest.pt (truncated) is refused with a one-line warning; the run continues from
    latest.1.pt and ends as the uninterrupted run."""
    args, out = imagenet_inputs["args"], imagenet_inputs["root"] / "damaged"
    icf.assert_ok(icf.run_main("imagenet_experiment.py", *args, "--save_dir", out, "--stop_after_steps", 12))
    latest = out / "checkpoints" / "latest.pt"
    with open(latest, "r+b") as f:
        f.truncate(os.path.getsize(latest) // 2)
    proc = icf.run_main("imagenet_experiment.py", *args, "--save_dir", out, "--resume")
    icf.assert_ok(proc)
    assert f"warning: refused {latest}: not a readable checkpoint" in proc.stderr
    assert f"falling back to {out / 'checkpoints' / 'latest.1.pt'}" in proc.stderr
    assert "segment 2, 10 samples into it" in proc.stdout
    assert_same_run(imagenet_whole, out, (2, 4, 6))


# ------------------------------------------------------------------------------------ CORe50
C50_ARGS = ["--weights", "none", "--train_sessions", "1,2,4", "--test_sessions", "3", "--frame_step", 1,
            "--eval_fraction", 0.5, "--image_size", 32, "--num_codebooks", 8, "--codebook_size", 4,
            "--rehearsal_samples", 4, "--random_resized_crops", "--use_mixup", "--base_init_epochs", 2,
            "--extract_features_from", "layer4.1", "--classifier", "fc", "--device", "cpu", "--num_workers", 0,
            "--batch_size", 16, "--progress", "off", "--seed", 5, "--num_threads", 1, "--ordering", "class_iid",
            "--checkpoint_interval", 8]


def test_core50_stream_survives_kills(tmp_path):
    from image_classification_experiments import core50_experiment

    tree = c50f.make_core50_tree(tmp_path / "core50", frames=3, size=16)
    args = ["--images_dir", tree, *C50_ARGS]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    icf.assert_ok(icf.run_main("core50_experiment.py", *args, "--save_dir", whole))
    # base init on 5 frames, then 27 and 22 frames; checkpoints every 8 steps and after each segment
    outputs = interrupt_and_resume(core50_experiment.main, [*args, "--save_dir", killed], [
        kh.KillPoint.in_write(1, "base_init_features.h5"),         # base-init feature extraction
        kh.KillPoint.after_output("base init: F epoch 1/2"),       # base init: training F on the codes
        mid_step(2),                                               # streaming steps 9.. of segment 1
        kh.KillPoint.paused_write(1, "results.json"),             # writing the outputs at 32 frames
        kh.KillPoint.in_write(2, "latest.pt"),                     # writing the checkpoint of step 32
        kh.KillPoint.in_write(1, "remind_state_*")])               # writing the state at 54 frames
    assert_progress(outputs, 4)
    assert_same_run(whole, killed, (5, 32, 54))
    kh.assert_same_files(whole, killed, ["stream_order.npy", "stream_order.csv"])
