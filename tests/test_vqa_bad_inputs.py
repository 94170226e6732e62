"""The VQA bad-input matrix: each bad input ends with one line ``vqa_trainer: error: ...`` (or
``error: ...`` from a data script) naming the file or flag and what was expected, exit status 2,
and nothing written: no run folder, no config.json, no log.txt, no data file."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest

import vqa_fixtures as fx
from vqa_train_fixtures import make_prepared
from vqa_experiments.preprocess import tdiuc

SMAC = {"dataset": "clevr", "model": "s_mac", "model_args": {"emb_dim": 8, "dim": 16, "max_step": 2},
        "embedding_init": "normal", "num_types": 5, "train_batch_size": 16, "val_batch_size": 8,
        "lr": 0.003, "max_epochs": 1, "test_interval": 8, "num_rehearsal_samples": 10}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa_bad")
    data = make_prepared(str(root / "clevr"), "clevr", orders=("qtype", "iid"), n_types=5,
                         type_counts=[12, 10, 8, 6, 4], n_val=10)
    other = make_prepared(str(root / "other"), "clevr", orders=("qtype",), n_types=5,
                          type_counts=[12, 10, 8, 6, 4], n_val=10, seed=7)
    config = root / "smac.json"
    config.write_text(json.dumps(SMAC))
    return {"data": data, "other": other, "config": str(config)}


@pytest.fixture
def data(prepared, tmp_path):
    """A private copy of the prepared data, to spoil."""
    return shutil.copytree(prepared["data"], tmp_path / "data")


def snapshot(root):
    """Every file below ``root`` with its size and modification time."""
    return {os.path.join(d, n): (os.path.getsize(os.path.join(d, n)), os.stat(os.path.join(d, n)).st_mtime_ns)
            for d, _, names in os.walk(root) for n in names}


def fails(tmp_path, *args, prog="vqa_trainer", script="vqa_trainer.py"):
    """Run the script in this process; it must fail with one line and write nothing below tmp_path."""
    before = snapshot(tmp_path)
    proc = fx.run_vqa_main(script, *args, expect_rc=2, prog=prog if prog else None)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    prefix = f"{prog}: error: " if prog else "error: "
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    assert snapshot(tmp_path) == before, "the failed run wrote files"
    return lines[0]


def trainer_args(prepared, data_dir, save_dir, *extra, order="qtype", mode="--stream_with_rehearsal"):
    return ["--config", prepared["config"], "--data_dir", str(data_dir), "--data_order", order, mode,
            "--save_dir", str(save_dir), "--num_threads", "1", "--progress", "off", *extra]


# ------------------------------------------------------------------------------- data files
def test_questions_file_of_another_split(tmp_path):
    """TDIUC: the val questions file where the train one belongs does not match the annotations."""
    root = fx.make_tdiuc(str(tmp_path / "raw"), n_train_images=4, n_val_images=2)
    shutil.copy(tdiuc.questions_path(root, "val"), tdiuc.questions_path(root, "train"))
    line = fails(tmp_path, "--data_root", root, prog=None, script="preprocess_tdiuc.py")
    assert "does not match its annotations" in line and "OpenEnded_mscoco_train2014_questions.json" in line


def test_question_table_that_does_not_match_the_answer_table(prepared, data, tmp_path):
    with h5py.File(data / "train_clevr.h5", "a") as f:
        aidx = f["aidx"][()]
        aidx[3] = 8  # the answer table has 8 answers: 0..7
        f["aidx"][...] = aidx
    line = fails(tmp_path, *trainer_args(prepared, data, tmp_path / "run"))
    assert "train_clevr.h5" in line and "answer index 8 is outside the 8 entries of a2idx" in line
    assert "LUT_clevr.json" in line


def test_answer_table_of_the_wrong_size(prepared, data, tmp_path):
    lut = json.loads((data / "LUT_clevr.json").read_text())
    lut["a2idx"] = {a: i for a, i in lut["a2idx"].items() if i < 6}  # a table of 6 answers, tables use 8
    (data / "LUT_clevr.json").write_text(json.dumps(lut))
    line = fails(tmp_path, *trainer_args(prepared, data, tmp_path / "run"))
    assert "LUT_clevr.json" in line and "outside the 6 entries of a2idx" in line


def test_codes_with_another_number_of_sub_codes(prepared, tmp_path):
    data = make_prepared(str(tmp_path / "m8"), "clevr", orders=("qtype",), type_counts=[12, 10, 8, 6, 4],
                         n_val=10, num_codebooks=8)
    shutil.copy(os.path.join(prepared["data"], "pq_clevr_qtype.npz"), os.path.join(data, "pq_clevr_qtype.npz"))
    line = fails(tmp_path, *trainer_args(prepared, data, tmp_path / "run"))
    assert "codes_clevr_qtype.h5" in line and "8 sub-codes" in line and "4 codebooks" in line


def test_codes_made_with_another_quantizer(prepared, data, tmp_path):
    """Same sizes, other centroids: the checksum the codes file records gives it away."""
    shutil.copy(os.path.join(prepared["other"], "codes_clevr_qtype.h5"), data / "codes_clevr_qtype.h5")
    line = fails(tmp_path, *trainer_args(prepared, data, tmp_path / "run"))
    assert "codes_clevr_qtype.h5" in line and "another quantizer" in line and "pq_clevr_qtype.npz" in line
    # Another data set's quantizer for these codes (--pq_file): the same refusal.
    other_pq = os.path.join(prepared["other"], "pq_clevr_qtype.npz")
    line = fails(tmp_path, *trainer_args(prepared, prepared["data"], tmp_path / "run", "--pq_file", other_pq))
    assert f"codes made with another quantizer (pq_clevr_qtype.npz) than {other_pq}" in line


def test_codes_of_other_features(prepared, data, tmp_path):
    with h5py.File(data / "codes_clevr_qtype.h5", "a") as f:
        f.attrs["feature_shape"] = np.asarray([4, 4, 32])
    line = fails(tmp_path, *trainer_args(prepared, data, tmp_path / "run"))
    assert "32-channel features" in line and "16 channels" in line


def test_embedding_matrix_of_the_wrong_size(prepared, data, tmp_path):
    cfg = tmp_path / "file_init.json"
    cfg.write_text(json.dumps({**SMAC, "embedding_init": "file", "model_args": {"emb_dim": 300, "dim": 16,
                                                                                 "max_step": 2}}))
    np.save(data / "embedding_init_300d_clevr.npy", np.zeros((5, 300), np.float32))
    args = trainer_args(prepared, data, tmp_path / "run")
    args[args.index(prepared["config"])] = str(cfg)
    line = fails(tmp_path, *args)
    assert "embedding_init_300d_clevr.npy" in line and "expected (17, D)" in line and "(16, D)" in line


# ------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("extra, mode, expected", [
    (["--stream"], "--stream_with_rehearsal", "argument --stream: not allowed with argument --stream_with_rehearsal"),
    (["--rehearsal_mode", "limited_buffer", "--max_buffer_size", "20"], "--stream",
     "--rehearsal_mode limited_buffer applies to --stream_with_rehearsal only"),
    (["--max_buffer_size", "20"], "--stream_with_rehearsal", "--max_buffer_size needs --rehearsal_mode limited_buffer"),
    (["--rehearsal_mode", "limited_buffer"], "--stream_with_rehearsal", "needs --max_buffer_size >= 1"),
    (["--base_init_from", "elsewhere"], "--offline", "--base_init_from applies to --stream_with_rehearsal and"),
    (["--data_order", "random"], "--stream", "argument --data_order: invalid choice: 'random'"),
])
def test_contradicting_or_bad_flags(prepared, tmp_path, extra, mode, expected):
    line = fails(tmp_path, *trainer_args(prepared, prepared["data"], tmp_path / "run", *extra, mode=mode))
    assert expected in line


def test_replays_larger_than_the_buffer(prepared, tmp_path):
    line = fails(tmp_path, *trainer_args(prepared, prepared["data"], tmp_path / "run", "--rehearsal_mode",
                                         "limited_buffer", "--max_buffer_size", "6"))
    assert "--max_buffer_size 6 is smaller than the 10 replays drawn per step (num_rehearsal_samples)" in line


# ------------------------------------------------------------------------------- run folders
def test_resume_folder_without_a_checkpoint_starts_a_new_run(prepared, tmp_path):
    """Decision: --resume on a folder with no checkpoint starts the run (the run scripts always pass
    --resume, so their first run starts this way), saying so in the log."""
    save = tmp_path / "run"
    proc = fx.run_vqa_main("vqa_trainer.py", *trainer_args(prepared, prepared["data"], save, "--resume",
                                                            "--stop_after_steps", "1"), prog="vqa_trainer")
    assert f"--resume: no checkpoint in {save}, starting a new run" in proc.stdout
    assert (save / "checkpoints" / "latest.pt").is_file()


def test_resume_folder_whose_checkpoints_are_all_damaged(prepared, tmp_path):
    save = tmp_path / "run"
    args = trainer_args(prepared, prepared["data"], save, "--stop_after_steps", "1")
    fx.run_vqa_main("vqa_trainer.py", *args, prog="vqa_trainer")
    fx.run_vqa_main("vqa_trainer.py", *args[:-1], "2", "--resume", prog="vqa_trainer")
    for name in ("latest.pt", "latest.1.pt"):
        path = save / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:1000])
    line = fails(tmp_path, *args, "--resume")
    assert "latest.pt: no usable checkpoint among 2 versions" in line and "truncated or damaged" in line


def test_folder_of_another_run(prepared, tmp_path):
    save = tmp_path / "run"
    args = trainer_args(prepared, prepared["data"], save, "--stop_after_steps", "1")
    fx.run_vqa_main("vqa_trainer.py", *args, prog="vqa_trainer")
    line = fails(tmp_path, *args)
    assert f"{save} already holds a run; pass --resume" in line
    line = fails(tmp_path, *args, "--resume", "--seed", "9")
    assert "latest.pt: made with different settings (args.seed: 0 vs 9)" in line
