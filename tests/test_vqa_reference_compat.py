"""A drop-in for the reference VQA trainer: its command lines and flags, its shipped word-embedding
matrices (no <unk> row), the run scripts' warning without GloVe, and S-MAC evaluated in the
reference's validation batches."""
import json
import os
import random
import shlex
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from vqa_train_fixtures import REPO_ROOT, make_prepared
from vqa_experiments import vqa_trainer
from vqa_experiments.models import SMAC, UpDown, WordEmbedding
from vqa_experiments.stream_order import reference_val_batches, val_order
from vqa_experiments.training.config import FLAG_KEYS, load_config
from vqa_experiments.training.network import _init_embedding
from vqa_experiments.training.step import make_buffer
from vqa_experiments.training.trainer import predict, val_batches

# The reference's run scripts (run_clevr_experiment.sh, run_tdiuc_experiment.sh), their flags and
# values as they are; only --data_dir is ours (the reference read it from its config module).
REFERENCE_COMMANDS = [
    "--config_name CLEVR_streaming --expt_name CLEVR_streaming_iid_3e-4 --stream_with_rehearsal "
    "--data_order iid --lr 3e-4",
    "--config_name TDIUC_streaming --expt_name TDIUC_streaming_qtype_2e-3 --stream_with_rehearsal "
    "--data_order qtype --lr 2e-3",
]


def parse(argv):
    """The trainer's command line as it reads it: parsed args and the resolved config."""
    args = vqa_trainer.build_parser().parse_args(argv)
    vqa_trainer.check_args(args)
    return args, load_config(args.config, args.set, {k: getattr(args, k) for k in FLAG_KEYS})


@pytest.mark.parametrize("command", REFERENCE_COMMANDS)
def test_reference_run_script_command_lines(command):
    args, cfg = parse(shlex.split(command) + ["--data_dir", "data"])
    expt = shlex.split(command)[3]
    assert args.mode == "remind" and args.save_dir == os.path.join("snapshots", expt)
    assert cfg["_source"] == ("clevr_streaming.json" if "CLEVR" in command else "tdiuc_streaming.json")
    assert cfg["lr"] == float(shlex.split(command)[-1])
    assert args.data_order == shlex.split(command)[6]
    assert args.rehearsal_mode == "default" and args.max_buffer_size is None  # unlimited buffer
    assert not args.use_exponential_averaging


@pytest.mark.parametrize("flags, expected", [
    ([], {"mode": "offline"}),  # no mode flag: the reference trained offline
    (["--stream"], {"mode": "finetune"}),
    (["--full"], {"mode": "full"}),
    (["--stream_with_rehearsal"], {"mode": "remind", "rehearsal_mode": "default"}),
    (["--stream_with_rehearsal", "--rehearsal_mode", "default"], {"mode": "remind", "rehearsal_mode": "default"}),
    (["--stream_with_rehearsal", "--rehearsal_mode", "limited_buffer", "--max_buffer_size", "100"],
     {"rehearsal_mode": "limited_buffer", "max_buffer_size": 100, "buffer_replacement_strategy": "random"}),
    (["--stream_with_rehearsal", "--rehearsal_mode", "limited_buffer", "--max_buffer_size", "100",
      "--buffer_replacement_strategy", "queue"], {"buffer_replacement_strategy": "queue"}),
    (["--use_exponential_averaging"], {"use_exponential_averaging": True}),
    (["--expt_name", "my_run"], {"save_dir": os.path.join("snapshots", "my_run")}),
])
def test_each_reference_flag(flags, expected):
    args, cfg = parse(["--config_name", "CLEVR_streaming", "--data_order", "qtype", "--data_dir", "d"] + flags)
    for key, value in expected.items():
        assert getattr(args, key) == value, key
    assert cfg["ema_decay"] == 0.999 and cfg["lr"] == 3e-4  # the reference's EMA decay; --lr not given
    if args.rehearsal_mode == "limited_buffer":
        buf = make_buffer(args)
        assert buf.capacity == 100
        assert buf.eviction == ("oldest" if args.buffer_replacement_strategy == "queue" else "random")


def test_lr_overrides_the_config():
    assert parse(["--config_name", "TDIUC_streaming", "--data_order", "iid", "--lr", "1e-3"])[1]["lr"] == 1e-3


# ------------------------------------------------------------------------- word embeddings
SMAC_FILE_INIT = {"dataset": "clevr", "model": "s_mac", "model_args": {"emb_dim": 300, "dim": 16, "max_step": 2},
                  "embedding_init": "file", "num_types": 5, "train_batch_size": 16, "val_batch_size": 8,
                  "lr": 0.003, "max_epochs": 1, "test_interval": 8, "num_rehearsal_samples": 5}


@pytest.fixture(scope="module")
def clevr(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa_compat")
    data = make_prepared(str(root / "clevr"), "clevr", orders=("qtype",), n_types=5,
                         type_counts=[12, 10, 8, 6, 4], n_val=12)
    config = root / "smac_file.json"
    config.write_text(json.dumps(SMAC_FILE_INIT))
    return {"root": root, "data": data, "config": str(config)}


def test_reference_embedding_matrix_without_unk_row_loads(clevr, tmp_path):
    """The reference's glove6b_init_300d_<ds>.npy has one row per token of its dictionary; ours
    adds <unk> (last): the matrix is padded with a zero <unk> row, as our GloVe init gives it."""
    ntoken = len(json.load(open(os.path.join(clevr["data"], "dictionary_clevr.json")))["idx2word"])
    glove = np.random.default_rng(3).normal(0, 0.33, (ntoken - 1, 300)).astype(np.float32)
    path = tmp_path / "glove6b_init_300d_clevr.npy"
    np.save(path, glove)
    save = tmp_path / "run"
    assert vqa_trainer.main(["--config", clevr["config"], "--data_dir", clevr["data"], "--data_order", "qtype",
                             "--stream", "--embedding_file", str(path), "--save_dir", str(save),
                             "--progress", "off", "--stop_after_steps", "1"]) == 0
    ckpt = torch.load(save / "checkpoints" / "latest.pt", weights_only=True)
    rows = ckpt["model"]["embedding.emb.weight"]  # frozen in S-MAC: still the init
    assert rows.shape == (ntoken + 1, 300)
    assert torch.equal(rows[:ntoken - 1], torch.from_numpy(glove)) and not rows[ntoken - 1].any()
    assert vqa_trainer.main(["--config", clevr["config"], "--data_dir", clevr["data"], "--data_order", "qtype",
                             "--stream", "--embedding_file", str(path), "--save_dir", str(save),
                             "--progress", "off", "--resume"]) == 0
    info = json.load(open(save / "results.json"))["embedding_init"]
    assert info == {"kind": "file", "path": str(path), "shape": [ntoken - 1, 300],
                    "unk_row": "zeros (added: the file has no <unk> row)"}
    assert "<unk> row zeros (added" in (save / "log.txt").read_text()


def test_results_name_every_embedding_init():
    emb = WordEmbedding(ntoken=6, emb_dim=4)
    data = types.SimpleNamespace(files={}, dictionary=None)
    assert _init_embedding(emb, {"embedding_init": "normal", "embedding_init_std": 0.33}, data, 5) == \
        {"kind": "normal", "std": 0.33, "seed": 5}
    assert _init_embedding(emb, {"embedding_init": "default"}, data, 5)["kind"] == "default"


def _fake_python(tmp_path):
    """A PYTHON for the run scripts that runs ``-c`` snippets and prints the trainer's command."""
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\nif [[ "$1" == "-c" ]]; then exec {sys.executable} "$@"; fi\n'
                    'echo "TRAINER $*"\n')
    stub.chmod(0o755)
    return str(stub)


@pytest.mark.parametrize("script, dataset", [("run_clevr_streaming.sh", "clevr"), ("run_tdiuc_streaming.sh", "tdiuc")])
def test_run_scripts_warn_loudly_without_glove(tmp_path, script, dataset):
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "PYTHON": _fake_python(tmp_path), "DATA_DIR": str(data), "DATA_ORDERS": "qtype",
           "SAVE_ROOT": str(tmp_path / "runs")}
    run = lambda **extra: subprocess.run(["bash", os.path.join(REPO_ROOT, "vqa_experiments", script)],  # noqa: E731
                                         env={**env, **extra}, capture_output=True, text=True, timeout=60)
    proc = run()  # no summary: the source of the prepared matrix is unknown
    assert proc.returncode == 0 and "WARNING: no GloVe word-embedding file given" in proc.stderr
    assert "source: unknown" in proc.stderr and "TRAINER" in proc.stdout
    summary = data / f"preprocess_{dataset}_summary.json"
    summary.write_text(json.dumps({"embedding_source": {"source": "random_normal", "std": 0.33, "seed": 0}}))
    assert "source: random_normal" in run().stderr
    summary.write_text(json.dumps({"embedding_source": {"source": "glove", "file": "glove.6B.300d.txt"}}))
    assert "WARNING" not in run().stderr
    summary.unlink()
    proc = run(EMBEDDING_FILE="ref/glove6b_init_300d.npy")
    assert "WARNING" not in proc.stderr and "--embedding_file ref/glove6b_init_300d.npy" in proc.stdout


# ------------------------------------------------------------------------- S-MAC val order
def test_reference_validation_order_and_batches():
    qtypes = np.array([2, 0, 1, 0, 2, 1, 0])
    qlens = np.array([3, 5, 5, 2, 7, 5, 4])
    assert val_order(qtypes, "qtype").tolist() == [1, 3, 6, 2, 5, 0, 4]  # stable sort by raw type
    shuffled = list(range(7))
    random.Random(666).shuffle(shuffled)
    assert val_order(qtypes, "iid").tolist() == shuffled
    # Chunks of 3 of that order, each sorted by length, longest first, ties in order.
    assert [b.tolist() for b in reference_val_batches(qtypes, qlens, "qtype", 3)] == [[1, 6, 3], [2, 5, 0], [4]]


def test_smac_is_evaluated_in_the_reference_batches():
    torch.manual_seed(0)
    n, L = 11, 9
    qlen = torch.randint(1, L, (n,))
    q = torch.where(torch.arange(L)[None] < qlen[:, None], torch.randint(0, 20, (n, L)), 20)
    v = torch.randn(n, 4, 12)
    data = types.SimpleNamespace(num_val=n, val_qtype=np.arange(n) % 3, split={"val": {"ql": qlen}},
                                 inputs=lambda split, rows: (q[rows], v[rows], qlen[rows]))
    smac = SMAC(ntoken=20, num_classes=5, emb_dim=8, dim=16, max_step=2, cnn_feat_size=12).eval()
    batches = val_batches(smac, data, "iid", 4)
    assert [b.tolist() for b in batches] == [b.tolist() for b in reference_val_batches(data.val_qtype, qlen.numpy(), "iid", 4)]
    with torch.no_grad():
        expected = np.empty(n, dtype=np.int64)
        for rows in batches:
            r = torch.as_tensor(rows)
            expected[rows] = smac(q[r], v[r], qlen[r]).argmax(1).numpy()
        # The padded length of a batch changes S-MAC's logits: why the batches matter. The last
        # question of a batch is its shortest.
        rows = torch.as_tensor(batches[0])
        assert qlen[rows[-1]] < qlen[rows].max()
        alone = smac(q[rows[-1:]], v[rows[-1:]], qlen[rows[-1:]])
        assert not torch.equal(alone, smac(q[rows], v[rows], qlen[rows])[-1:])
    assert np.array_equal(predict(smac, data, 4, batches), expected)
    updown = UpDown(ntoken=20, num_classes=5, emb_dim=8, lstm_out=8, num_hidden=8, attention_hidden=8,
                    cnn_feat_size=12)
    assert val_batches(updown, data, "iid", 4) is None  # UpDown: file order, results unchanged
