"""Kill tests: a short seeded CPU job is SIGKILLed at several points (mid-step, mid-evaluation,
mid-checkpoint-write), resumed each time, and must end with exactly the results and weights of an
uninterrupted run. One test per long-running script; the helpers are in kill_helpers.py."""
import json
import os

import pytest
import torch

import ic_fixtures as icf
import kill_helpers as kh
from vqa_train_fixtures import REPO_ROOT, make_prepared

VQA_TRAINER = os.path.join(REPO_ROOT, "vqa_experiments", "vqa_trainer.py")
BASE_INIT = os.path.join(REPO_ROOT, "image_classification_experiments", "train_base_init_network_from_scratch.py")

# S-MAC at a tiny width, qtype order: base init 3 epochs of 3 batches on 40 questions (evaluated
# after epochs 2 and 3), then 90 REMIND steps with evaluations at 65, 95, 110 and 130.
SMAC_TINY = {"dataset": "clevr", "model": "s_mac", "model_args": {"emb_dim": 8, "dim": 16, "max_step": 2},
             "embedding_init": "normal", "num_types": 5, "train_batch_size": 16, "val_batch_size": 8,
             "lr": 0.003, "max_epochs": 3, "test_interval": 2, "num_rehearsal_samples": 10}
VQA_OUTPUTS = ["results.json", "train_log.csv", "predictions/*.json"]


def _vqa_args(data_dir, config, save_dir):
    return ["--config", config, "--data_dir", data_dir, "--data_order", "qtype", "--stream_with_rehearsal",
            "--rehearsal_mode", "limited_buffer", "--max_buffer_size", "60", "--use_exponential_averaging",
            "--seed", "4", "--device", "cpu", "--num_threads", "1", "--progress", "off", "--save_dir", save_dir]


def test_vqa_trainer_survives_kills(tmp_path):
    from vqa_experiments import vqa_trainer

    data = make_prepared(str(tmp_path / "clevr"), "clevr", orders=("qtype",), n_types=5,
                         type_counts=[40, 30, 25, 20, 15], n_val=30)
    config = tmp_path / "smac.json"
    config.write_text(json.dumps(SMAC_TINY))
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    assert vqa_trainer.main(_vqa_args(data, str(config), whole)) == 0
    outputs = kh.interrupt_and_resume(
        lambda i: kh.script_command(VQA_TRAINER, *_vqa_args(data, str(config), killed), "--resume"),
        [kh.KillPoint.after_output(r"streaming \(REMIND", delay=0.3),  # mid-step
         kh.KillPoint.paused_write(1, "results.json"),                # mid-evaluation
         kh.KillPoint.in_write(2, "latest.pt")])                      # mid-checkpoint-write
    assert "resumed from" in outputs[1] and "resumed from" in outputs[-1]
    kh.assert_same_files(whole, killed, VQA_OUTPUTS)
    ca, cb = (json.load(open(os.path.join(d, "config.json"))) for d in (whole, killed))
    assert ca["args"].pop("save_dir") == whole and cb["args"].pop("save_dir") == killed and ca == cb
    with open(os.path.join(killed, "results.json")) as f:
        assert json.load(f)["complete"]
    a, b = (torch.load(os.path.join(d, "checkpoints", "latest.pt"), weights_only=True) for d in (whole, killed))
    for key in ("model", "optimizer", "ema", "buffer", "evaluations"):
        kh.assert_same_tensors(a[key], b[key], key)
    a, b = (torch.load(os.path.join(d, "base_init.pt"), weights_only=True) for d in (whole, killed))
    kh.assert_same_tensors(a["model"], b["model"], "base_init.model")
    kh.assert_no_temp_files(killed)


CKPT = "ResNet18ClassifyAfterLayer4_1_3.pth"


def _base_init_args(ws, save_dir):
    return ["--data", ws["data"], "--labels_dir", ws["labels"], "--save_dir", save_dir, "--base_max_class", 3,
            "--num_classes", 4, "--batch_size", 10, "--num_workers", 0, "--image_size", 32, "--seed", 3,
            "--lr", 0.02, "--device", "cpu", "--num_threads", 1, "--progress", "off", "--epochs", 3,
            "--ckpt_file", CKPT]


@pytest.fixture
def base_init_ws(tmp_path):
    from image_classification_experiments.make_numpy_imagenet_label_files import make_label_files

    data = icf.make_imagenet_tree(tmp_path / "data", n_train=8, n_val=3, size=32)
    order = icf.write_order(tmp_path / "order.txt", [icf.CLASSES[i] for i in (3, 1, 0, 2)])
    make_label_files(data, str(tmp_path / "labels"), order)
    return {"data": data, "labels": str(tmp_path / "labels"), "root": tmp_path}


def test_base_init_training_survives_kills(base_init_ws):
    ws = base_init_ws
    whole, killed = ws["root"] / "whole", ws["root"] / "killed"
    icf.assert_ok(icf.run_main("train_base_init_network_from_scratch.py", *_base_init_args(ws, whole)))

    def command(i):
        resume = ["--resume", killed] if (killed / CKPT).is_file() else []
        return kh.script_command(BASE_INIT, *_base_init_args(ws, killed), *resume)

    kh.interrupt_and_resume(command, [kh.KillPoint.after_output(r"epoch 1/3", delay=0.3),  # training epoch 2
                                      kh.KillPoint.in_write(1, CKPT)])                   # writing epoch 2's checkpoint
    a, b = (torch.load(d / CKPT, weights_only=True) for d in (whole, killed))
    for key in ("state_dict", "optimizer", "scheduler", "epoch", "best_acc1", "best_epoch"):
        kh.assert_same_tensors(a[key], b[key], key)
    a, b = (torch.load(d / f"best_{CKPT}", weights_only=True) for d in (whole, killed))
    kh.assert_same_tensors(a, b, "best checkpoint")
    timing = ("train_seconds", "train_img_per_s", "epoch_seconds")
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (whole, killed))
    strip = lambda hist: [{k: v for k, v in h.items() if k not in timing} for h in hist]  # noqa: E731
    assert strip(ra["history"]) == strip(rb["history"]) and len(rb["history"]) == 3
    assert ra["best_val_top1"] == rb["best_val_top1"] and ra["best_epoch"] == rb["best_epoch"]
    kh.assert_no_temp_files(killed)
