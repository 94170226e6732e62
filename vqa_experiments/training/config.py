"""Trainer configs: every key with its default, loading (file, ``--set``, flags) and checks.

Configs are plain JSON objects (``vqa_experiments/configs/*.json`` hold the reference's values);
data paths are never in a config, only on the command line.
"""
import copy
import json
import os

from remind.errors import InputError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# Every config key, with its default.
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
# Config keys that command-line flags of the same name override.
FLAG_KEYS = ("lr", "max_epochs", "test_interval", "num_rehearsal_samples", "train_batch_size", "val_batch_size")


class TrainerError(InputError):
    """Bad command line, config or data for the trainer; the message is one line."""


def resolve_config_path(name):
    """A JSON file, or a config name in ``vqa_experiments/configs`` (with or without ``.json``)."""
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


def _read_config_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TrainerError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise TrainerError(f"{path}: a config must be a JSON object")
    return raw


def _apply_override(cfg, item):
    """One ``--set KEY=VALUE`` (VALUE as JSON, else a string; ``model_args.NAME`` for sizes)."""
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


def load_config(name, overrides=(), explicit=None):
    """Defaults <- the config file <- ``--set`` overrides <- explicit flags (those not None)."""
    path = resolve_config_path(name)
    cfg = copy.deepcopy(CONFIG_DEFAULTS)
    for key, value in _read_config_file(path).items():
        if key.startswith("_"):
            continue
        if key not in CONFIG_DEFAULTS:
            raise TrainerError(f"{path}: unknown config key {key!r}")
        cfg[key] = value
    for item in overrides:
        _apply_override(cfg, item)
    for key, value in (explicit or {}).items():
        if value is not None:
            cfg[key] = value
    check_config(cfg, path)
    cfg["_source"] = os.path.basename(path)
    return cfg


def public_config(cfg):
    """The config without its bookkeeping keys (``_source``)."""
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _check_choices(cfg, path):
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


def _check_numbers(cfg):
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


def check_config(cfg, path):
    """Every value of a loaded config; the first bad one is a ``TrainerError``."""
    _check_choices(cfg, path)
    _check_numbers(cfg)
    if cfg["train_on"] not in ("valid", "full") or cfg["test_on"] not in ("valid", "full"):
        raise TrainerError("config: 'train_on' and 'test_on' must be 'valid' or 'full'")
