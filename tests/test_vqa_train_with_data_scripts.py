"""Raw CLEVR-format data -> the data scripts (preprocess, features, PQ codes) -> the trainer."""
import json

import vqa_fixtures as fx

from vqa_experiments.stream_order import stream_boundaries, stream_order
from vqa_experiments.vqa_data import dataset_files, load_questions


def test_clevr_from_raw_files_to_streaming_results(tmp_path):
    root = fx.make_clevr(str(tmp_path / "raw"))
    fx.run_vqa_main("preprocess_clevr.py", "--data_root", root)
    fx.run_vqa_main("extract_image_features.py", "--dataset", "clevr", "--data_root", root,
                    "--arch", "resnet18", "--layer", "layer3", "--weights", "none", "--num_workers", "0",
                    "--device", "cpu", "--batch_size", "32", "--no_progress")
    fx.run_vqa_main("fit_pq_and_encode.py", "--dataset", "clevr", "--data_dir", root, "--order", "qtype",
                    "--device", "cpu", "--no_progress")
    # S-MAC at a tiny width on the 14x14x256 maps, with the prepared (frozen) 300-d embedding init.
    cfg = tmp_path / "smac.json"
    cfg.write_text(json.dumps({
        "dataset": "clevr", "model": "s_mac", "model_args": {"emb_dim": 300, "dim": 16, "max_step": 2},
        "embedding_init": "file", "num_classes": 28, "num_types": 5, "train_batch_size": 16,
        "val_batch_size": 64, "lr": 3e-4, "max_epochs": 1, "test_interval": 8, "num_rehearsal_samples": 5}))
    save = tmp_path / "run"
    proc = fx.run_vqa_main("vqa_trainer.py", "--config", str(cfg), "--data_dir", root, "--data_order", "qtype",
                           "--stream_with_rehearsal", "--save_dir", str(save), "--num_threads", "1",
                           "--progress", "off", prog="vqa_trainer", expect_rc=None)
    assert proc.returncode == 0, proc.stderr
    with open(save / "results.json") as f:
        res = json.load(f)
    train = load_questions(dataset_files(root, "clevr")["train"], ["qtypeidx", "aidx"])
    keep = train["aidx"] < 28
    qt = train["qtypeidx"][keep]
    assert res["boundaries"] == stream_boundaries(qt[stream_order(qt, "qtype")], "qtype")
    assert len(res["boundaries"]) == 5 and res["complete"]
    last = res["evaluations"][-1]
    assert last["tag"] == f"boundary_{res['boundaries'][-1]}"
    assert last["num_questions"] == len(load_questions(dataset_files(root, "clevr")["val"], ["qid"])["qid"])
    assert sum(t["count"] for t in last["per_type"].values()) == last["num_questions"]
