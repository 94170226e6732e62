#!/usr/bin/env python3
"""Streaming VQA with REMIND (CLEVR / TDIUC), the Fine-Tune and offline baselines.

The protocol of the reference ``vqa_experiments/vqa_trainer.py`` (project spec ``vqa.md`` section 6):

- **base initialisation**: the first stream chunk (rows ``[0, boundaries[0])``) is learned offline
  for ``max_epochs`` epochs (20) in random mini-batches with Adamax at a constant learning rate;
  evaluations after every ``test_interval``-th epoch (8, 16) and after the last one (20). The same
  optimizer, with its state, continues into streaming.
- **REMIND** (``--stream_with_rehearsal``): one question at a time; its index joins the replay
  buffer first, then ``num_rehearsal_samples`` (50) distinct indices are drawn uniformly from the
  whole buffer (the current one and the base-init questions included) and one Adamax step is taken
  on the 51 questions. The buffer stores only indices and answers
  (``remind.replay_buffer.ReplayBuffer`` with ``code_shape=None``); images are kept once, as uint8
  PQ codes, and decoded on the fly with ``remind.quantizer.ProductQuantizer`` for streaming, replay
  and evaluation alike. ``--rehearsal_mode limited_buffer --max_buffer_size K`` bounds the buffer,
  evicting from the class (answer) with the most stored questions: a random one (``random``) or its
  oldest (``queue``).
- **Fine-Tune** (``--stream``): after the same base initialisation, every question of the stream
  (base-init ones included) gets one step on itself alone (batch of 1), no replay.
- **offline** (``--offline``, or no mode flag as in the reference): ``max_epochs`` epochs over the
  whole training set. ``--full``: one fresh model per boundary, trained offline on the stream
  prefix up to it (the reference's growing-subsets mode, which was broken).

Evaluation on the whole validation set at every boundary; results (overall accuracy, accuracy per
question type, mean-per-type; harmonic mean-per-type as a labelled extra) go to
``<save_dir>/results.json``, ``train_log.csv`` and ``predictions/<tag>.json``. Checkpoints are
atomic; ``--resume`` continues exactly (model, optimizer, buffer, stream position, RNG states), so
an interrupted run ends with the same results as an uninterrupted one.

Deviations from the reference, all deliberate: the replay buffer holds true stream positions (the
reference used a running counter over length-sorted chunks); batches are not sorted by question
length (packing does not need it); ``--seed`` makes runs repeatable; checkpoints/resume exist; the
EMA option also averages during streaming; the offline modes work.
"""
import argparse
import copy
import csv
import json
import math
import os
import sys
import time

import remind  # noqa: F401  (before anything imports torchvision)
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from remind.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from remind.quantizer import QuantizerError
from remind.replay_buffer import ReplayBuffer, ReplayBufferError
from vqa_experiments.models import build_model, count_parameters
from vqa_experiments.stream_order import stream_boundaries, stream_order
from vqa_experiments.vqa_data import (VQADataError, dataset_files, load_codes, load_dictionary,
                                      load_embedding_init, load_lut, load_pq, load_questions)
from vqa_experiments.vqa_metrics import vqa_accuracy_report
from remind.errors import InputError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
CHECKPOINT_NAME = "checkpoint_latest.pt"
BASE_INIT_NAME = "base_init.pt"
CHECKPOINT_FORMAT = "remind_vqa_trainer/1"

# Every config key, with its default. Values of the reference configs are in configs/*.json.
CONFIG_DEFAULTS = {
    "dataset": None,              # 'clevr' or 'tdiuc' (file names of the prepared data)
    "model": None,                # 's_mac' or 'updown'
    "model_args": {},             # keyword sizes of the model class
    "freeze_embedding": None,     # None: the model's default (S-MAC frozen, UpDown trainable)
    "embedding_init": "file",     # 'file' (embedding_init_300d_<ds>.npy), 'normal' (N(0, std^2)), 'default'
    "embedding_init_std": 0.33,
    "num_classes": None,          # None: the size of the answer table
    "num_types": None,            # divisor of mean-per-type (5 CLEVR, 12 TDIUC); None: size of the type table
    "imnorm": False,              # L2-normalise every location after PQ decoding (TDIUC)
    "train_batch_size": 64,
    "val_batch_size": 64,
    "optimizer": "Adamax",
    "lr": 3e-4,
    "max_epochs": 20,
    "test_interval": 8,
    "num_rehearsal_samples": 50,
    "train_on": "valid",          # 'valid': keep train questions with aidx < num_classes; 'full': all
    "data_subset": 1.0,           # keep the first int(N * data_subset) train rows (file order), as the reference
    "test_on": "full",            # 'full': every val question; 'valid': only aidx < num_classes
    "ema_decay": 0.999,
}
# Settings that do not change what a run computes (allowed to differ on --resume).
NON_SEMANTIC_ARGS = {"resume", "device", "progress", "progress_disabled", "stop_after_steps", "checkpoint_interval_min",
                     "config", "set", "lr", "max_epochs", "test_interval", "num_rehearsal_samples",
                     "train_batch_size", "val_batch_size",
                     "num_threads", "save_predictions", "base_init_from", "save_dir", "expt_name", "data_dir",
                     "train_file", "val_file", "codes_file", "pq_file", "dictionary_file", "lut_file",
                     "embedding_file"}


class TrainerError(InputError):
    """Bad command line, config or data for the trainer; the message is one line."""


class StopRun(Exception):
    """Raised to end the run early (``--stop_after_steps``) right after a checkpoint."""


# ----------------------------------------------------------------------------------------- config
def resolve_config_path(name):
    if os.path.isfile(name):
        return name
    for cand in (os.path.join(CONFIG_DIR, name), os.path.join(CONFIG_DIR, name + ".json"),
                 os.path.join(CONFIG_DIR, name.lower() + ".json")):
        if os.path.isfile(cand):
            return cand
    known = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json"))
    raise TrainerError(f"config not found: {name} (give a JSON file or one of: {', '.join(known)})")


def _parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(name, overrides=(), explicit=None):
    path = resolve_config_path(name)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TrainerError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise TrainerError(f"{path}: a config must be a JSON object")
    cfg = copy.deepcopy(CONFIG_DEFAULTS)
    for key, value in raw.items():
        if key.startswith("_"):
            continue
        if key not in CONFIG_DEFAULTS:
            raise TrainerError(f"{path}: unknown config key {key!r}")
        cfg[key] = value
    for item in overrides:
        if "=" not in item:
            raise TrainerError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.split(".")
        if parts[0] not in CONFIG_DEFAULTS or (len(parts) > 1 and parts[0] != "model_args") or len(parts) > 2:
            raise TrainerError(f"--set: unknown config key {key!r}")
        if len(parts) == 2:
            cfg["model_args"] = dict(cfg["model_args"] or {})
            cfg["model_args"][parts[1]] = _parse_value(text)
        else:
            cfg[key] = _parse_value(text)
    for key, value in (explicit or {}).items():
        if value is not None:
            cfg[key] = value
    _check_config(cfg, path)
    cfg["_source"] = os.path.basename(path)
    return cfg


def _check_config(cfg, path):
    if cfg["dataset"] not in ("clevr", "tdiuc"):
        raise TrainerError(f"{path}: 'dataset' must be 'clevr' or 'tdiuc', got {cfg['dataset']!r}")
    if cfg["model"] not in ("s_mac", "updown"):
        raise TrainerError(f"{path}: 'model' must be 's_mac' or 'updown', got {cfg['model']!r}")
    if not isinstance(cfg["model_args"], dict):
        raise TrainerError(f"{path}: 'model_args' must be an object")
    if cfg["embedding_init"] not in ("file", "normal", "default"):
        raise TrainerError(f"{path}: 'embedding_init' must be 'file', 'normal' or 'default'")
    if cfg["optimizer"] != "Adamax":
        raise TrainerError(f"{path}: only the reference optimizer 'Adamax' is supported")
    for key in ("train_batch_size", "val_batch_size", "test_interval"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise TrainerError(f"config: {key!r} must be a positive integer, got {cfg[key]!r}")
    for key in ("max_epochs", "num_rehearsal_samples"):
        if not isinstance(cfg[key], int) or cfg[key] < 0:
            raise TrainerError(f"config: {key!r} must be a non-negative integer, got {cfg[key]!r}")
    if not isinstance(cfg["lr"], (int, float)) or cfg["lr"] <= 0:
        raise TrainerError(f"config: 'lr' must be a positive number, got {cfg['lr']!r}")
    for key in ("num_classes", "num_types"):
        if cfg[key] is not None and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise TrainerError(f"config: {key!r} must be a positive integer or null, got {cfg[key]!r}")
    if not isinstance(cfg["data_subset"], (int, float)) or not 0 < cfg["data_subset"] <= 1:
        raise TrainerError(f"config: 'data_subset' must be in (0, 1], got {cfg['data_subset']!r}")
    if cfg["train_on"] not in ("valid", "full") or cfg["test_on"] not in ("valid", "full"):
        raise TrainerError("config: 'train_on' and 'test_on' must be 'valid' or 'full'")


# ------------------------------------------------------------------------------------------- data
class VQAStreamData:
    """Question tables in memory (train rows in streaming order), image codes + PQ on the device."""

    def __init__(self, args, cfg, device, log):
        files = dataset_files(args.data_dir or ".", cfg["dataset"], order=args.data_order)
        for key in ("train", "val", "codes", "pq", "dictionary", "lut", "embedding"):
            override = getattr(args, f"{key}_file", None)
            if override:
                files[key] = override
            elif not args.data_dir:
                raise TrainerError(f"--data_dir is required (or give --{key}_file)")
        self.files = files
        self.device = device
        self.lut = load_lut(files["lut"])
        self.dictionary = load_dictionary(files["dictionary"])
        self.num_classes = cfg["num_classes"] or len(self.lut["a2idx"])
        self.num_types = cfg["num_types"] or len(self.lut["qtype2idx"])
        self.type_names = list(self.lut["idx2qtype"])
        cols = ("qid", "iid", "aidx", "qtypeidx", "qseq", "qlen")
        train = load_questions(files["train"], columns=cols)
        val = load_questions(files["val"], columns=cols)
        codes, image_index = load_codes(files["codes"])
        self.pq = load_pq(files["pq"], device=device)
        if codes.shape[-1] != self.pq.M:
            raise TrainerError(f"{files['codes']}: codes have {codes.shape[-1]} sub-codes but the quantizer "
                               f"{files['pq']} has {self.pq.M} codebooks")
        self.map_shape = tuple(int(s) for s in codes.shape[1:3])
        self.feat_dim = int(self.pq.d)
        if cfg["model"] == "s_mac" and self.map_shape[0] != self.map_shape[1]:
            raise TrainerError(f"{files['codes']}: S-MAC needs square feature maps, got {self.map_shape}")
        # Training rows kept as in the reference: the first int(N * data_subset) rows of the file, then
        # ('valid') those whose answer is inside the classifier.
        n_file = len(train["qid"])
        n_keep = int(n_file * cfg["data_subset"])
        if n_keep < n_file:
            train = {k: v[:n_keep] for k, v in train.items()}
            log(f"data_subset {cfg['data_subset']}: the first {n_keep} of {n_file} train questions")
        aidx = train["aidx"].astype(np.int64)
        if cfg["train_on"] == "valid":
            keep = (aidx >= 0) & (aidx < self.num_classes)
        else:
            keep = np.ones(len(aidx), dtype=bool)
            if len(aidx) and (aidx.min() < 0 or aidx.max() >= self.num_classes):
                raise TrainerError(f"{files['train']}: train_on 'full' needs every answer index in "
                                   f"[0, {self.num_classes}); use train_on 'valid'")
        if not keep.any():
            raise TrainerError(f"{files['train']}: no training question has an answer index in [0, {self.num_classes})")
        train = {k: v[keep] for k, v in train.items()}
        order = stream_order(train["qtypeidx"], args.data_order)
        train = {k: v[order] for k, v in train.items()}
        if cfg["test_on"] == "valid":
            vkeep = (val["aidx"] >= 0) & (val["aidx"] < self.num_classes)
            val = {k: v[vkeep] for k, v in val.items()}
        if len(val["qid"]) == 0:
            raise TrainerError(f"{files['val']}: no validation questions")
        self.boundaries = stream_boundaries(train["qtypeidx"], args.data_order)
        self.num_train, self.num_val = len(train["qid"]), len(val["qid"])
        self.codes = torch.from_numpy(np.ascontiguousarray(codes.reshape(len(codes), -1, codes.shape[-1]))).to(device)
        self.split = {}
        for name, table, path in (("train", train, files["train"]), ("val", val, files["val"])):
            self.split[name] = self._tensors(table, image_index, path, files["codes"])
        self.val_qid = val["qid"].astype(np.int64)
        self.val_aidx = val["aidx"].astype(np.int64)
        self.val_qtype = val["qtypeidx"].astype(np.int64)
        self.imnorm = bool(cfg["imnorm"])
        log(f"data: {self.num_train} train questions ({int((~keep).sum())} dropped: answer outside the "
            f"{self.num_classes} classes), {self.num_val} val questions, {len(self.codes)} images of "
            f"{self.map_shape[0]}x{self.map_shape[1]}x{self.feat_dim} as {self.pq.M}-byte PQ codes")

    def _tensors(self, table, image_index, path, codes_path):
        qseq = table["qseq"].astype(np.int64)
        qlen = table["qlen"].astype(np.int64)
        seq_len, pad = self.dictionary.seq_len, self.dictionary.pad_index
        if qseq.ndim != 2 or qseq.shape[1] != seq_len:
            raise TrainerError(f"{path}: qseq has shape {qseq.shape}, expected (N, {seq_len}) from the dictionary")
        if len(qseq) and (qseq.min() < 0 or qseq.max() > pad):
            raise TrainerError(f"{path}: qseq holds token ids outside [0, {pad}] of the dictionary")
        if len(qlen) and (qlen.min() < 1 or qlen.max() > seq_len - 1):
            raise TrainerError(f"{path}: qlen must lie in [1, {seq_len - 1}]")
        rows = np.fromiter((image_index.get(int(i), -1) for i in table["iid"]), dtype=np.int64, count=len(qseq))
        if (rows < 0).any():
            missing = int(table["iid"][np.flatnonzero(rows < 0)[0]])
            raise TrainerError(f"{codes_path}: no codes for image id {missing} used by {path} "
                               f"({int((rows < 0).sum())} questions affected)")
        return {"q": torch.from_numpy(qseq).to(self.device),
                "ql": torch.from_numpy(qlen),  # lengths stay on the CPU (packing needs them there)
                "y": torch.from_numpy(table["aidx"].astype(np.int64)).to(self.device),
                "img": torch.from_numpy(rows).to(self.device)}

    def features(self, img_rows):
        v = self.pq.decode(self.codes[img_rows])               # [B, H*W, C] float32
        if self.imnorm:
            v = v / (v.norm(dim=2, keepdim=True) + 1e-8)
        return v

    def batch(self, split, idx):
        """(q, v, ql, y) for the given row indices (CPU LongTensor) of a split."""
        s = self.split[split]
        dev_idx = idx.to(self.device)
        return s["q"][dev_idx], self.features(s["img"][dev_idx]), s["ql"][idx], s["y"][dev_idx]

    def train_labels(self, start, stop):
        return self.split["train"]["y"][start:stop].cpu()


# ------------------------------------------------------------------------------------ replay buffer
def make_buffer(args):
    if args.rehearsal_mode == "limited_buffer":
        # "queue" evicts the oldest item of the largest class (the reference's never evicted).
        eviction = "oldest" if args.buffer_replacement_strategy == "queue" else "random"
        return ReplayBuffer(None, capacity=args.max_buffer_size, device="cpu", seed=args.seed,
                            eviction=eviction)
    return ReplayBuffer(None, capacity=None, device="cpu", seed=args.seed)


# ------------------------------------------------------------------------------------------ trainer
class Trainer:
    def __init__(self, args, cfg, data, device, log):
        self.args, self.cfg, self.data, self.device, self.log = args, cfg, data, device, log
        self.mode = args.mode
        self.save_dir = args.save_dir
        self.b0 = data.boundaries[0]
        self.boundary_set = set(data.boundaries)
        self.last_checkpoint_time = time.time()
        self.evaluations = []
        self.state = {"phase": None, "epoch": 0, "perm": None, "batch_pos": 0, "t": 0, "subset": 0,
                      "global_step": 0}
        self.epoch_gen = torch.Generator().manual_seed(args.seed + 1)
        self.buffer = make_buffer(args) if self.mode == "remind" else None
        self.build_model()

    # ------------------------------------------------------------------ model / optimizer
    def build_model(self):
        cfg, data = self.cfg, self.data
        torch.manual_seed(self.args.seed)
        args = dict(cfg["model_args"] or {})
        if "cnn_feat_size" in args and args.pop("cnn_feat_size") != data.feat_dim:
            raise TrainerError(f"config: model_args.cnn_feat_size differs from the feature size {data.feat_dim} "
                               f"of {data.files['pq']}")
        try:
            model = build_model(cfg["model"], data.dictionary.ntoken, data.num_classes, data.feat_dim, **args)
        except ValueError as err:
            raise TrainerError(f"config: {err}") from None
        emb = model.embedding
        if cfg["embedding_init"] == "file":
            matrix = load_embedding_init(data.files["embedding"], ntoken=data.dictionary.ntoken)
            if matrix.shape[1] != emb.emb_dim:
                raise TrainerError(f"{data.files['embedding']}: embedding width {matrix.shape[1]} differs from "
                                   f"model_args.emb_dim {emb.emb_dim} (use embedding_init 'normal')")
            emb.init_rows(matrix)
        elif cfg["embedding_init"] == "normal":
            emb.init_normal(cfg["embedding_init_std"], torch.Generator().manual_seed(self.args.seed))
        freeze = cfg["freeze_embedding"]
        if freeze is None:
            freeze = type(model).freeze_embedding_by_default
        for p in emb.parameters():
            p.requires_grad_(not freeze)
        self.model = model.to(self.device)
        # Adamax with the reference's defaults (betas 0.9/0.999, eps 1e-8, no weight decay); the
        # multi-tensor implementation is the same update, faster for small models on the CPU.
        self.optimizer = torch.optim.Adamax([p for p in self.model.parameters() if p.requires_grad], lr=cfg["lr"],
                                            foreach=True)
        self.ema = None
        if self.args.use_exponential_averaging:
            self.ema = copy.deepcopy(self.model)
            for p in self.ema.parameters():
                p.requires_grad_(False)
        self.log(f"model: {cfg['model']} with {count_parameters(self.model):,} parameters "
                 f"({count_parameters(self.model, trainable_only=True):,} trainable), embedding "
                 f"{'frozen' if freeze else 'trainable'} ({cfg['embedding_init']} init), device {self.device}")

    def train_step(self, idx):
        q, v, ql, y = self.data.batch("train", idx)
        if not self.model.training:
            self.model.train()
        loss = F.cross_entropy(self.model(q, v, ql), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                decay = self.cfg["ema_decay"]
                for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                    pe.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        self.state["global_step"] += 1
        return loss

    # ------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, tag, **info):
        net = self.ema if self.ema is not None else self.model
        net.eval()
        preds = []
        bs = self.cfg["val_batch_size"]
        for start in range(0, self.data.num_val, bs):
            idx = torch.arange(start, min(start + bs, self.data.num_val))
            q, v, ql, _ = self.data.batch("val", idx)
            preds.append(net(q, v, ql).argmax(dim=1).cpu())
        preds = torch.cat(preds).numpy()
        report = vqa_accuracy_report(preds, self.data.val_aidx, self.data.val_qtype, self.data.num_types,
                                     self.data.type_names)
        record = {"tag": tag, "mode": self.mode, **info, "global_step": self.state["global_step"], **report}
        self.evaluations.append(record)
        if self.args.save_predictions:
            pred_map = {}
            for qid, p in zip(self.data.val_qid.tolist(), preds.tolist()):
                pred_map.setdefault(str(qid), int(p))
            write_json(os.path.join(self.save_dir, "predictions", f"{tag}.json"), pred_map)
        self.write_results(complete=False)
        self.log(f"eval {tag}: overall {report['overall']:.4f}  mean-per-type {report['mean_per_type']:.4f}  "
                 f"harmonic-MPT(extra) {report['extras']['harmonic_mean_per_type']:.4f}")
        return record

    def write_results(self, complete):
        summary = {
            "mode": self.mode, "dataset": self.cfg["dataset"], "data_order": self.args.data_order,
            "seed": self.args.seed, "config": public_config(self.cfg),
            "rehearsal": self.rehearsal_info(),
            "num_train": self.data.num_train, "num_val": self.data.num_val,
            "boundaries": self.data.boundaries, "num_types": self.data.num_types,
            "type_names": self.data.type_names, "num_classes": self.data.num_classes,
            "metrics_note": "overall and mean_per_type are the reference's metrics; extras.harmonic_mean_per_type is not",
            "complete": bool(complete), "evaluations": self.evaluations,
        }
        write_json(os.path.join(self.save_dir, "results.json"), summary)
        with atomic_write(os.path.join(self.save_dir, "train_log.csv")) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["tag", "phase", "epoch", "samples_seen", "Acc", "VQAAcc", "MPT", "HMPT_extra"])
                for r in self.evaluations:
                    # VQA accuracy equals exact match here (ten identical answers), as in the reference.
                    w.writerow([r["tag"], r.get("phase"), r.get("epoch", "NA"), r.get("samples_seen", "NA"),
                                r["overall"], r["overall"], r["mean_per_type"],
                                r["extras"]["harmonic_mean_per_type"]])

    def rehearsal_info(self):
        if self.mode != "remind":
            return None
        return {"mode": self.args.rehearsal_mode, "max_buffer_size": self.args.max_buffer_size,
                "replacement": self.args.buffer_replacement_strategy if self.args.rehearsal_mode == "limited_buffer"
                else None, "num_rehearsal_samples": self.cfg["num_rehearsal_samples"]}

    # ------------------------------------------------------------------------ checkpoints
    def fingerprint(self):
        sem = {k: v for k, v in vars(self.args).items() if k not in NON_SEMANTIC_ARGS}
        return json.loads(json.dumps({"args": sem, "config": public_config(self.cfg),
                                      "num_train": self.data.num_train, "num_val": self.data.num_val,
                                      "boundaries": self.data.boundaries}))

    def base_init_fingerprint(self):
        fp = self.fingerprint()
        for key in ("mode", "rehearsal_mode", "max_buffer_size", "buffer_replacement_strategy"):
            fp["args"].pop(key, None)
        fp["config"].pop("num_rehearsal_samples", None)
        return fp

    def snapshot(self):
        rng = {"torch": torch.get_rng_state(), "epoch_gen": self.epoch_gen.get_state(),
               "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None}
        state = dict(self.state)
        return {"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint(), "state": state,
                "evaluations": self.evaluations, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict(),
                "buffer": None if self.buffer is None else self.buffer.state_dict(), "rng": rng}

    def save(self, name=CHECKPOINT_NAME):
        save_checkpoint(os.path.join(self.save_dir, name), self.snapshot())
        self.last_checkpoint_time = time.time()

    def restore(self, ckpt, path, check=True):
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise TrainerError(f"{path}: not a checkpoint of this trainer")
        if check:
            mine, theirs = self.fingerprint(), ckpt["fingerprint"]
            if mine != theirs:
                raise TrainerError(f"{path}: made with different settings ({fingerprint_diff(theirs, mine)}); "
                                   f"use another --save_dir or the same settings")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        if self.buffer is not None and ckpt.get("buffer") is not None:
            self.buffer.load_state_dict(ckpt["buffer"])
        self.state = dict(ckpt["state"])
        self.evaluations = list(ckpt["evaluations"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.epoch_gen.set_state(ckpt["rng"]["epoch_gen"])
        if self.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])

    def load_base_init(self, src_dir):
        path = os.path.join(src_dir, BASE_INIT_NAME)
        ckpt = load_checkpoint(path, map_location="cpu")
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise TrainerError(f"{path}: not a checkpoint of this trainer")
        fp_src = ckpt["base_init_fingerprint"]
        mine = self.base_init_fingerprint()
        if fp_src != mine:
            raise TrainerError(f"{path}: base initialisation made with different settings "
                               f"({fingerprint_diff(fp_src, mine)})")
        buffer = self.buffer
        self.buffer = None
        self.restore(ckpt, path, check=False)
        self.buffer = buffer
        for r in self.evaluations:
            r["mode"] = self.mode
        self.state.update({"phase": "stream", "t": 0, "epoch": 0, "perm": None, "batch_pos": 0})
        self.log(f"base initialisation loaded from {path} (global step {self.state['global_step']})")

    def after_step(self):
        """Checkpoint on the time interval, and stop when --stop_after_steps is reached."""
        stop = self.args.stop_after_steps
        if stop is not None and self.state["global_step"] >= stop:
            self.save()
            raise StopRun()
        if time.time() - self.last_checkpoint_time > 60.0 * self.args.checkpoint_interval_min:
            self.save()

    # ------------------------------------------------------------------------------ loops
    def run_epochs(self, num_rows, phase, label, final_boundary=None):
        """``max_epochs`` epochs of shuffled mini-batches over rows [0, num_rows), resumable mid-epoch."""
        cfg, st = self.cfg, self.state
        bs, max_epochs = cfg["train_batch_size"], cfg["max_epochs"]
        steps_per_epoch = math.ceil(num_rows / bs)
        done = st["epoch"] * steps_per_epoch + (st["batch_pos"] + bs - 1) // bs if st["perm"] is not None \
            else st["epoch"] * steps_per_epoch
        with tqdm(total=max_epochs * steps_per_epoch, initial=done, desc=label, unit="batch",
                  disable=self.args.progress_disabled, mininterval=2.0, leave=False) as bar:
            steps = 0
            while st["epoch"] < max_epochs:
                if st["perm"] is None:
                    st["perm"] = torch.randperm(num_rows, generator=self.epoch_gen)
                    st["batch_pos"] = 0
                while st["batch_pos"] < num_rows:
                    idx = st["perm"][st["batch_pos"]:st["batch_pos"] + bs]
                    loss = self.train_step(idx)
                    st["batch_pos"] += len(idx)
                    bar.update(1)
                    steps += 1
                    if steps % 50 == 0 and not bar.disable:
                        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                    self.after_step()
                st["epoch"] += 1
                st["perm"], st["batch_pos"] = None, 0
                epoch = st["epoch"]
                if epoch % cfg["test_interval"] == 0 or epoch == max_epochs:
                    info = {"phase": phase, "epoch": epoch, "samples_seen": num_rows}
                    if epoch == max_epochs and final_boundary is not None:
                        info["boundary"] = final_boundary
                    self.evaluate(f"{label}_epoch_{epoch}", **info)
                self.save()

    def run_stream(self):
        st, data = self.state, self.data
        n, k = data.num_train, self.cfg["num_rehearsal_samples"]
        remind_mode = self.mode == "remind"
        self.log(f"streaming ({'REMIND, ' + str(k) + ' replays per sample' if remind_mode else 'Fine-Tune'}): "
                 f"{n} questions, evaluations at {data.boundaries}")
        with tqdm(total=n, initial=st["t"], desc="stream", unit="q", disable=self.args.progress_disabled,
                  mininterval=2.0, leave=False) as bar:
            while st["t"] < n:
                t = st["t"]
                if remind_mode:
                    if t < self.b0:
                        # The base-init questions join the buffer (stored, not trained again).
                        self.buffer.add_batch(None, data.train_labels(t, self.b0), torch.arange(t, self.b0))
                        bar.update(self.b0 - t)
                        st["t"] = self.b0
                        continue
                    self.buffer.add(None, int(data.split["train"]["y"][t]), t)
                    slots = self.buffer.sample(k)
                    idx = torch.cat([torch.tensor([t]), self.buffer.item_ids[slots.cpu()]])
                else:
                    idx = torch.tensor([t])
                loss = self.train_step(idx)
                st["t"] = t + 1
                bar.update(1)
                if st["t"] % 200 == 0 and not bar.disable:
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                if st["t"] in self.boundary_set:
                    self.evaluate(f"boundary_{st['t']}", phase="stream", samples_seen=st["t"], boundary=st["t"])
                    self.save()
                else:
                    self.after_step()

    def run(self):
        st = self.state
        if st["phase"] is None:
            if self.mode in ("remind", "finetune"):
                st["phase"] = "base_init" if self.cfg["max_epochs"] > 0 else "stream"
            else:
                st["phase"] = self.mode
        if st["phase"] == "base_init":
            self.log(f"base initialisation on {self.b0} questions for {self.cfg['max_epochs']} epochs")
            self.run_epochs(self.b0, "base_init", "base_init", final_boundary=self.b0)
            st.update({"phase": "stream", "t": 0, "epoch": 0, "perm": None, "batch_pos": 0})
            snap = self.snapshot()
            snap["base_init_fingerprint"] = self.base_init_fingerprint()
            snap["buffer"] = None
            save_checkpoint(os.path.join(self.save_dir, BASE_INIT_NAME), snap)
            self.save()
        if st["phase"] == "stream":
            self.run_stream()
        elif st["phase"] == "offline":
            self.log(f"offline training on all {self.data.num_train} questions for {self.cfg['max_epochs']} epochs")
            self.run_epochs(self.data.num_train, "offline", "offline", final_boundary=self.data.num_train)
        elif st["phase"] == "full":
            bounds = self.data.boundaries
            while st["subset"] < len(bounds):
                b = bounds[st["subset"]]
                if st["epoch"] == 0 and st["perm"] is None:
                    # A fresh model and optimizer for each prefix of the stream.
                    self.build_model()
                self.log(f"offline on the stream prefix [0, {b}) ({st['subset'] + 1}/{len(bounds)})")
                self.run_epochs(b, "full", f"full_{b}", final_boundary=b)
                st.update({"subset": st["subset"] + 1, "epoch": 0, "perm": None, "batch_pos": 0})
                self.save()
        st["phase"] = "done"
        self.write_results(complete=True)
        self.save()


# ------------------------------------------------------------------------------------------ helpers
def public_config(cfg):
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def fingerprint_diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return fingerprint_diff(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {a!r} vs {b!r}"


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)


def build_parser():
    p = argparse.ArgumentParser(description="Streaming VQA with REMIND (CLEVR/TDIUC) and its baselines.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", "--config_name", dest="config", required=True,
                   help="config JSON file, or a name in vqa_experiments/configs (clevr_streaming, tdiuc_streaming, "
                        "easy_vqa_demo)")
    p.add_argument("--data_dir", help="folder of the prepared data (DATA_FORMATS.md)")
    p.add_argument("--data_order", choices=["iid", "qtype"], required=True)
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--stream_with_rehearsal", dest="mode", action="store_const", const="remind",
                       help="REMIND: stream one question at a time with replay")
    modes.add_argument("--stream", dest="mode", action="store_const", const="finetune",
                       help="the Fine-Tune baseline: stream one question at a time, no replay")
    modes.add_argument("--offline", dest="mode", action="store_const", const="offline",
                       help="offline on the whole training set (also the default without a mode flag)")
    modes.add_argument("--full", dest="mode", action="store_const", const="full",
                       help="offline on every stream prefix up to each boundary (a fresh model each)")
    p.add_argument("--rehearsal_mode", choices=["default", "limited_buffer"], default="default",
                   help="default: every seen question stays replayable; limited_buffer: at most --max_buffer_size")
    p.add_argument("--max_buffer_size", type=int, default=None)
    p.add_argument("--buffer_replacement_strategy", choices=["queue", "random"], default="random",
                   help="eviction from the largest class when the limited buffer is full: random item or oldest item")
    p.add_argument("--lr", type=float, default=None, help="overrides the config's learning rate")
    p.add_argument("--max_epochs", type=int, default=None, help="overrides the config (base-init / offline epochs)")
    p.add_argument("--test_interval", type=int, default=None, help="overrides the config (evaluate every N epochs)")
    p.add_argument("--num_rehearsal_samples", type=int, default=None, help="overrides the config (replays per step)")
    p.add_argument("--train_batch_size", type=int, default=None)
    p.add_argument("--val_batch_size", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (JSON value), e.g. --set model_args.dim=64")
    p.add_argument("--use_exponential_averaging", action="store_true",
                   help="evaluate an exponential moving average (decay ema_decay) of the weights")
    p.add_argument("--expt_name", default="vqa_run")
    p.add_argument("--save_dir", default=None, help="run folder (default: snapshots/<expt_name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --save_dir from its last checkpoint")
    p.add_argument("--base_init_from", default=None, metavar="RUN_DIR",
                   help="start streaming from the base initialisation saved by another run with the same settings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda if available, else cpu")
    p.add_argument("--num_threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--checkpoint_interval_min", type=float, default=15.0,
                   help="also checkpoint after this many minutes (always at epoch ends and boundaries)")
    p.add_argument("--stop_after_steps", type=int, default=None,
                   help="checkpoint and stop after this many optimizer steps (to test --resume)")
    p.add_argument("--no_predictions", dest="save_predictions", action="store_false",
                   help="do not write predictions/<tag>.json")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto", help="tqdm progress bars")
    # Data files, each overriding the standard name in --data_dir.
    for key in ("train", "val", "codes", "pq", "dictionary", "lut", "embedding"):
        p.add_argument(f"--{key}_file", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.mode is None:
        args.mode = "offline"
    if args.rehearsal_mode == "limited_buffer":
        if args.max_buffer_size is None or args.max_buffer_size < 1:
            raise TrainerError("--rehearsal_mode limited_buffer needs --max_buffer_size >= 1")
    elif args.max_buffer_size is not None:
        raise TrainerError("--max_buffer_size needs --rehearsal_mode limited_buffer")
    if args.base_init_from and args.mode not in ("remind", "finetune"):
        raise TrainerError("--base_init_from applies to --stream_with_rehearsal and --stream only")
    args.progress_disabled = {"auto": None, "on": False, "off": True}[args.progress]
    explicit = {k: getattr(args, k) for k in ("lr", "max_epochs", "test_interval", "num_rehearsal_samples",
                                               "train_batch_size", "val_batch_size")}
    cfg = load_config(args.config, args.set, explicit)
    if args.save_dir is None:
        args.save_dir = os.path.join("snapshots", args.expt_name)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainerError("--device cuda: no CUDA device is available")
    ckpt_path = os.path.join(args.save_dir, CHECKPOINT_NAME)
    if os.path.exists(ckpt_path) and not args.resume:
        raise TrainerError(f"{args.save_dir} already holds a run; pass --resume to continue it or choose another "
                           f"--save_dir")
    os.makedirs(args.save_dir, exist_ok=True)
    log_file = open(os.path.join(args.save_dir, "log.txt"), "a", encoding="utf-8")

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    try:
        log(f"vqa_trainer: mode {args.mode}, config {cfg['_source']}, order {args.data_order}, seed {args.seed}, "
            f"save_dir {args.save_dir}")
        data = VQAStreamData(args, cfg, device, log)
        if data.boundaries[0] == 0 and cfg["max_epochs"] > 0 and args.mode in ("remind", "finetune"):
            raise TrainerError(f"the base-initialisation chunk is empty (boundaries {data.boundaries}); "
                               f"use more training questions")
        trainer = Trainer(args, cfg, data, device, log)
        if args.resume and os.path.exists(ckpt_path):
            trainer.restore(load_checkpoint(ckpt_path, map_location="cpu"), ckpt_path)
            log(f"resumed from {ckpt_path}: phase {trainer.state['phase']}, global step "
                f"{trainer.state['global_step']}")
        elif args.base_init_from:
            trainer.load_base_init(args.base_init_from)
        elif args.resume:
            log(f"--resume: no checkpoint in {args.save_dir}, starting a new run")
        write_json(os.path.join(args.save_dir, "config.json"),
                   {"config": public_config(cfg), "args": {k: v for k, v in vars(args).items()}})
        if trainer.state["phase"] == "done":
            log("the run is already complete")
            trainer.write_results(complete=True)
            return 0
        start = time.time()
        try:
            trainer.run()
        except StopRun:
            log(f"stopped after {trainer.state['global_step']} steps (checkpoint saved); continue with --resume")
            return 0
        log(f"done in {time.time() - start:.1f} s; results in {os.path.join(args.save_dir, 'results.json')}")
        return 0
    finally:
        log_file.close()


def cli():
    try:
        sys.exit(main())
    except (TrainerError, VQADataError, CheckpointError, QuantizerError, ReplayBufferError) as err:
        print(f"vqa_trainer: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("vqa_trainer: interrupted; continue with --resume from the last checkpoint", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
