"""Resuming the VQA trainer: its checkpoints carry the format version and the run fingerprint; a
truncated, damaged or foreign newest checkpoint is refused and the run falls back to the previous
one; every results file of a resumed run is byte-identical to an uninterrupted run's."""
import json
import re
import shutil

import pytest
import torch

import kill_helpers as kh
import vqa_fixtures as fx
from vqa_train_fixtures import make_prepared
from remind.runtime import RUN_CHECKPOINT_VERSION

SMAC = {"dataset": "clevr", "model": "s_mac", "model_args": {"emb_dim": 8, "dim": 16, "max_step": 2},
        "embedding_init": "normal", "num_types": 5, "train_batch_size": 16, "val_batch_size": 8,
        "lr": 0.003, "max_epochs": 3, "test_interval": 2, "num_rehearsal_samples": 10}
OUTPUTS = ["results.json", "train_log.csv", "predictions/*.json"]


def args(ws, save_dir, *extra):
    return ["--config", ws["config"], "--data_dir", ws["data"], "--data_order", "iid", "--stream_with_rehearsal",
            "--seed", "6", "--num_threads", "1", "--progress", "off", "--save_dir", str(save_dir), *extra]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa_resume")
    data = make_prepared(str(root / "clevr"), "clevr", orders=("iid",), n_types=5,
                         type_counts=[16, 12, 10, 8, 6], n_val=12)
    config = root / "smac.json"
    config.write_text(json.dumps(SMAC))
    ws = {"root": root, "data": data, "config": str(config), "whole": root / "whole"}
    fx.run_vqa_main("vqa_trainer.py", *args(ws, ws["whole"]), prog="vqa_trainer")
    return ws


def test_checkpoints_carry_format_version_and_fingerprint(ws):
    ckpt = torch.load(ws["whole"] / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["format"] == "vqa_trainer" and ckpt["format_version"] == RUN_CHECKPOINT_VERSION
    fp = ckpt["fingerprint"]
    assert fp["args"]["seed"] == 6 and fp["args"]["mode"] == "remind" and fp["config"]["lr"] == 0.003
    assert fp["num_train"] == 52 and fp["boundaries"][-1] == 52
    assert (ws["whole"] / "checkpoints" / "latest.1.pt").is_file()  # the previous version is kept


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _foreign(path):
    shutil.copy(path.parent.parent / "base_init.pt", path)  # a checkpoint of another kind


@pytest.mark.parametrize("damage, why", [(_truncate, "truncated or damaged"), (_flip_a_byte, "CRC"),
                                         (_foreign, "not a vqa_trainer checkpoint")])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(ws, tmp_path, damage, why):
    save = tmp_path / "run"
    fx.run_vqa_main("vqa_trainer.py", *args(ws, save, "--stop_after_steps", "5"), prog="vqa_trainer")
    fx.run_vqa_main("vqa_trainer.py", *args(ws, save, "--resume", "--stop_after_steps", "20"), prog="vqa_trainer")
    latest = save / "checkpoints" / "latest.pt"
    damage(latest)
    proc = fx.run_vqa_main("vqa_trainer.py", *args(ws, save, "--resume"), prog="vqa_trainer")
    warning = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: refused")]
    assert len(warning) == 1 and why in warning[0] and str(latest) in warning[0]
    assert warning[0].endswith(f"falling back to {latest.parent / 'latest.1.pt'}")
    step = int(re.search(r"resumed from .*global step (\d+)", proc.stdout).group(1))
    assert step < 20  # continued from the previous checkpoint
    kh.assert_same_files(ws["whole"], save, OUTPUTS)
    a, b = (torch.load(d / "checkpoints" / "latest.pt", weights_only=True) for d in (ws["whole"], save))
    for key in ("model", "optimizer", "buffer", "evaluations"):
        kh.assert_same_tensors(a[key], b[key], key)
    kh.assert_no_temp_files(save)


def test_resumed_config_json_is_the_first_start(ws, tmp_path):
    """config.json records the run as it started; a resume's own flags do not change it."""
    save = tmp_path / "run"
    fx.run_vqa_main("vqa_trainer.py", *args(ws, save, "--stop_after_steps", "3"), prog="vqa_trainer")
    first = (save / "config.json").read_bytes()
    assert "stop_after_steps" not in json.loads(first)["args"] and "resume" not in json.loads(first)["args"]
    fx.run_vqa_main("vqa_trainer.py", *args(ws, save, "--resume", "--checkpoint_interval", "7"), prog="vqa_trainer")
    assert (save / "config.json").read_bytes() == first
    log = (save / "log.txt").read_text()
    assert log.count("vqa_trainer: mode remind") == 2 and "of run time (all processes of this run" in log
