"""End-to-end tests of vqa_experiments/vqa_trainer.py on tiny prepared CLEVR- and TDIUC-format data."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vqa_train_fixtures import REPO_ROOT, make_prepared

from remind.runtime import run_cli as run_script
from vqa_experiments import vqa_trainer
from vqa_experiments.stream_order import stream_boundaries, stream_order
from vqa_experiments.training.step import make_buffer
from vqa_experiments.vqa_data import load_questions

TRAINER = os.path.join(REPO_ROOT, "vqa_experiments", "vqa_trainer.py")

SMAC_TINY = {"dataset": "clevr", "model": "s_mac", "model_args": {"emb_dim": 8, "dim": 16, "max_step": 2},
             "embedding_init": "normal", "num_classes": None, "num_types": 5, "train_batch_size": 16,
             "val_batch_size": 32, "lr": 0.003, "max_epochs": 3, "test_interval": 2, "num_rehearsal_samples": 10}
# emb_dim 300 so that the prepared embedding_init_300d file is used (embedding_init 'file').
UPDOWN_TINY = {"dataset": "tdiuc", "model": "updown",
               "model_args": {"emb_dim": 300, "lstm_out": 8, "num_hidden": 8, "attention_hidden": 8},
               "embedding_init": "file", "num_classes": None, "num_types": 12, "imnorm": True,
               "train_batch_size": 32, "val_batch_size": 64, "lr": 0.002, "max_epochs": 2, "test_interval": 8,
               "num_rehearsal_samples": 10}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa_train")
    clevr = make_prepared(str(root / "clevr"), "clevr", n_types=5, type_counts=[40, 30, 25, 20, 15], n_val=30)
    tdiuc = make_prepared(str(root / "tdiuc"), "tdiuc", n_types=12, n_answers=10, n_train=120, n_val=36,
                          map_hw=(2, 3), feat_dim=24, num_codebooks=4, seq_len=10)
    configs = {}
    for name, cfg in (("smac", SMAC_TINY), ("updown", UPDOWN_TINY)):
        path = root / f"{name}.json"
        path.write_text(json.dumps(cfg))
        configs[name] = str(path)
    return {"root": root, "clevr": clevr, "tdiuc": tdiuc, "cfg": configs}


def run_cli(args, cwd):
    """The trainer as a separate process (its exit status and stderr as a user sees them)."""
    return subprocess.run([sys.executable, TRAINER, "--num_threads", "1", "--progress", "off"] + args,
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def run_inproc(args):
    torch.set_num_threads(1)
    return vqa_trainer.main(["--progress", "off"] + args)


def run_cli_inproc(args, capsys):
    """The script's command-line wrapper in this process: exit status and stderr, as run_cli's."""
    with pytest.raises(SystemExit) as exc:
        run_script(run_inproc, args, prog="vqa_trainer")
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, exc.value.code, captured.out, captured.err)


def results(save_dir):
    with open(os.path.join(save_dir, "results.json")) as f:
        return json.load(f)


def test_remind_clevr_qtype_by_command_line(data, tmp_path):
    save = tmp_path / "remind"
    assert run_inproc(["--config", data["cfg"]["smac"], "--data_dir", data["clevr"], "--data_order", "qtype",
                       "--stream_with_rehearsal", "--save_dir", str(save), "--seed", "1"]) == 0
    res = results(save)
    assert res["complete"] and res["mode"] == "remind"
    qt = load_questions(os.path.join(data["clevr"], "train_clevr.h5"), columns=["qtypeidx"])["qtypeidx"]
    expected = stream_boundaries(qt[stream_order(qt, "qtype")], "qtype")
    assert res["boundaries"] == expected == [40, 65, 95, 110, 130]  # blocks 0, 2, 1, 4, 3
    tags = [e["tag"] for e in res["evaluations"]]
    assert tags == ["base_init_epoch_2", "base_init_epoch_3"] + [f"boundary_{b}" for b in expected[1:]]
    last = res["evaluations"][-1]
    assert set(last["per_type"]) == {"0", "1", "2", "3", "4"}
    accs = [last["per_type"][k]["accuracy"] for k in "01234"]
    assert last["mean_per_type"] == pytest.approx(sum(accs) / 5)
    assert "harmonic_mean_per_type" in last["extras"]
    assert (save / "predictions" / "boundary_130.json").is_file()
    assert (save / "train_log.csv").read_text().count("\n") == 1 + len(tags)
    with open(save / "predictions" / "boundary_130.json") as f:
        assert len(json.load(f)) == 30


def test_finetune_tdiuc_iid_by_command_line(data, tmp_path):
    save = tmp_path / "ft"
    assert run_inproc(["--config", data["cfg"]["updown"], "--data_dir", data["tdiuc"], "--data_order", "iid",
                       "--stream", "--save_dir", str(save)]) == 0
    res = results(save)
    assert res["boundaries"] == [12, 24, 36, 48, 60, 72, 84, 96, 108, 120]
    # Fine-Tune evaluates at every boundary, the first one included, after its base init (epoch 2).
    assert [e["tag"] for e in res["evaluations"]] == ["base_init_epoch_2"] + [f"boundary_{b}" for b in res["boundaries"]]
    assert res["evaluations"][-1]["global_step"] == 2 * 1 + 120  # 1 batch per epoch, then 1 step per question


def test_resume_equals_uninterrupted(data, tmp_path):
    common = ["--config", data["cfg"]["smac"], "--data_dir", data["clevr"], "--data_order", "iid",
              "--stream_with_rehearsal", "--rehearsal_mode", "limited_buffer", "--max_buffer_size", "25",
              "--seed", "3", "--no_predictions"]
    full, parts = str(tmp_path / "full"), str(tmp_path / "parts")
    assert run_inproc(common + ["--save_dir", full]) == 0
    # Stop in the middle of a base-init epoch, then in the middle of the stream, then finish.
    assert run_inproc(common + ["--save_dir", parts, "--stop_after_steps", "4"]) == 0
    assert not results(parts)["complete"]
    assert run_inproc(common + ["--save_dir", parts, "--resume", "--stop_after_steps", "40"]) == 0
    assert run_inproc(common + ["--save_dir", parts, "--resume"]) == 0
    a, b = results(full), results(parts)
    assert b["complete"] and a["evaluations"] == b["evaluations"]
    ca = torch.load(os.path.join(full, "checkpoints", "latest.pt"), weights_only=True)
    cb = torch.load(os.path.join(parts, "checkpoints", "latest.pt"), weights_only=True)
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    assert torch.equal(ca["buffer"]["item_ids"], cb["buffer"]["item_ids"])
    assert len(ca["buffer"]["item_ids"]) == 25  # the limited buffer stays at its size
    # A finished run resumes to a no-op; different settings are refused.
    assert run_inproc(common + ["--save_dir", parts, "--resume"]) == 0
    with pytest.raises(vqa_trainer.TrainerError, match="different settings"):
        run_inproc(common[:-1] + ["--save_dir", parts, "--resume", "--seed", "4"])


def test_base_init_reuse_equals_own_base_init(data, tmp_path):
    common = ["--config", data["cfg"]["updown"], "--data_dir", data["tdiuc"], "--data_order", "qtype",
              "--no_predictions", "--seed", "5"]
    remind_dir, ft_own, ft_reused = (str(tmp_path / n) for n in ("remind", "ft_own", "ft_reused"))
    assert run_inproc(common + ["--stream_with_rehearsal", "--save_dir", remind_dir]) == 0
    assert run_inproc(common + ["--stream", "--save_dir", ft_own]) == 0
    assert run_inproc(common + ["--stream", "--save_dir", ft_reused, "--base_init_from", remind_dir]) == 0
    assert results(ft_own)["evaluations"] == [dict(e) for e in results(ft_reused)["evaluations"]]
    # REMIND with the same seed shares the base-init evaluations.
    r = results(remind_dir)["evaluations"]
    assert r[0]["overall"] == results(ft_own)["evaluations"][0]["overall"]
    assert r[0]["boundary"] == results(remind_dir)["boundaries"][0]


def test_offline_and_growing_subsets(data, tmp_path):
    common = ["--config", data["cfg"]["smac"], "--data_dir", data["clevr"], "--data_order", "qtype",
              "--no_predictions", "--max_epochs", "1"]
    assert run_inproc(common + ["--offline", "--save_dir", str(tmp_path / "off")]) == 0
    res = results(tmp_path / "off")
    assert [e["tag"] for e in res["evaluations"]] == ["offline_epoch_1"]
    assert res["evaluations"][0]["global_step"] == int(np.ceil(130 / 16))
    assert run_inproc(common + ["--full", "--save_dir", str(tmp_path / "full")]) == 0
    res = results(tmp_path / "full")
    assert [e["boundary"] for e in res["evaluations"]] == res["boundaries"]


def test_queue_buffer_evicts_the_oldest_of_the_largest_class():
    import argparse

    args = argparse.Namespace(rehearsal_mode="limited_buffer", max_buffer_size=4, seed=0,
                              buffer_replacement_strategy="queue")
    buf = make_buffer(args)
    for item, label in enumerate([0, 0, 1, 0]):
        buf.add(None, label, item)
    assert buf.add(None, 1, 4) == 0      # class 0 (items 0, 1, 3) is the largest: its oldest goes
    # Classes 0 (items 1, 3) and 1 (items 2, 4) tie: one of them loses its oldest item.
    assert buf.add(None, 2, 5) in (1, 2)
    assert len(buf) == 4 and buf.class_counts()[2] == 1


def _one_line_error(proc):
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("vqa_trainer: error:")
    return lines[0]


def test_clear_errors(data, tmp_path, capsys):
    missing = run_cli(["--config", data["cfg"]["smac"], "--data_dir", str(tmp_path / "nowhere"), "--data_order",
                       "qtype", "--stream_with_rehearsal", "--save_dir", str(tmp_path / "e1")], cwd=str(tmp_path))
    assert "not found" in _one_line_error(missing) and "nowhere" in missing.stderr
    # Codes whose sub-code count does not match the quantizer.
    bad = tmp_path / "bad"
    make_prepared(str(bad), "clevr", orders=("qtype",), n_train=40, n_val=10, type_counts=[10, 8, 8, 7, 7])
    other = tmp_path / "other"
    make_prepared(str(other), "clevr", orders=("qtype",), n_train=40, n_val=10, num_codebooks=8)
    os.replace(other / "pq_clevr_qtype.npz", bad / "pq_clevr_qtype.npz")
    proc = run_cli_inproc(["--config", data["cfg"]["smac"], "--data_dir", str(bad), "--data_order", "qtype",
                           "--stream", "--save_dir", str(tmp_path / "e2")], capsys)
    assert "sub-codes" in _one_line_error(proc)
    with pytest.raises(vqa_trainer.TrainerError, match="max_buffer_size"):
        run_inproc(["--config", data["cfg"]["smac"], "--data_dir", data["clevr"], "--data_order", "iid",
                    "--stream_with_rehearsal", "--rehearsal_mode", "limited_buffer",
                    "--save_dir", str(tmp_path / "e3")])
    with pytest.raises(vqa_trainer.TrainerError, match="unknown config key"):
        run_inproc(["--config", data["cfg"]["smac"], "--data_dir", data["clevr"], "--data_order", "iid",
                    "--set", "bogus=1", "--save_dir", str(tmp_path / "e4")])
    with pytest.raises(vqa_trainer.TrainerError, match="config not found"):
        run_inproc(["--config", "no_such_config", "--data_dir", data["clevr"], "--data_order", "iid",
                    "--save_dir", str(tmp_path / "e5")])


def test_resume_growing_subsets_with_ema(data, tmp_path):
    """--full (a fresh model per boundary) and the EMA copy also resume exactly."""
    common = ["--config", data["cfg"]["smac"], "--data_dir", data["clevr"], "--data_order", "qtype", "--full",
              "--max_epochs", "2", "--use_exponential_averaging", "--no_predictions", "--seed", "2"]
    full, parts = str(tmp_path / "full"), str(tmp_path / "parts")
    assert run_inproc(common + ["--save_dir", full]) == 0
    for stop in (3, 12):  # inside the first prefix, then inside a later one
        assert run_inproc(common + ["--save_dir", parts, "--resume", "--stop_after_steps", str(stop)]) == 0
    assert run_inproc(common + ["--save_dir", parts, "--resume"]) == 0
    a, b = results(full), results(parts)
    assert len(a["evaluations"]) == 5 and a["evaluations"] == b["evaluations"]
