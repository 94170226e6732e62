"""A run's outputs: ``results.json`` (settings and every evaluation), ``train_log.csv`` (one row
per evaluation) and ``predictions/<tag>.json`` ({qid: answer index})."""
import os

from remind.runtime import write_csv, write_json
from vqa_experiments.training.config import public_config

METRICS_NOTE = "overall and mean_per_type are the reference's metrics; extras.harmonic_mean_per_type is not"
LOG_HEADER = ["tag", "phase", "epoch", "samples_seen", "Acc", "VQAAcc", "MPT", "HMPT_extra"]


def rehearsal_info(args, cfg, mode):
    """The replay settings of a REMIND run (None for the other modes)."""
    if mode != "remind":
        return None
    limited = args.rehearsal_mode == "limited_buffer"
    return {"mode": args.rehearsal_mode, "max_buffer_size": args.max_buffer_size,
            "replacement": args.buffer_replacement_strategy if limited else None,
            "num_rehearsal_samples": cfg["num_rehearsal_samples"]}


def describe_embedding_init(info):
    """One phrase for the log: which word-embedding init a model got."""
    if info["kind"] == "file":
        return f"init from {info['path']} {tuple(info['shape'])}, <unk> row {info['unk_row']}"
    if info["kind"] == "normal":
        return f"N(0, {info['std']}^2) init, seed {info['seed']}"
    return "PyTorch's default N(0, 1) init"


def run_summary(args, cfg, data, mode, evaluations, complete, embedding_init=None):
    """What ``results.json`` holds: the run's settings, its data sizes, the word-embedding init
    (file path and shape, 'normal' or 'default') and the evaluations so far."""
    return {
        "mode": mode, "dataset": cfg["dataset"], "data_order": args.data_order,
        "seed": args.seed, "config": public_config(cfg), "embedding_init": embedding_init,
        "rehearsal": rehearsal_info(args, cfg, mode),
        "num_train": data.num_train, "num_val": data.num_val,
        "boundaries": data.boundaries, "num_types": data.num_types,
        "type_names": data.type_names, "num_classes": data.num_classes,
        "metrics_note": METRICS_NOTE, "complete": bool(complete), "evaluations": evaluations,
    }


def _log_row(r):
    # VQA accuracy equals exact match here (ten identical answers), as in the reference.
    return [r["tag"], r.get("phase"), r.get("epoch", "NA"), r.get("samples_seen", "NA"),
            r["overall"], r["overall"], r["mean_per_type"], r["extras"]["harmonic_mean_per_type"]]


def write_results(save_dir, summary):
    """``results.json`` and ``train_log.csv`` (both rewritten atomically after every evaluation)."""
    write_json(os.path.join(save_dir, "results.json"), summary)
    write_csv(os.path.join(save_dir, "train_log.csv"), [_log_row(r) for r in summary["evaluations"]], LOG_HEADER)


def write_predictions(save_dir, tag, qids, preds):
    """``predictions/<tag>.json``: {qid: predicted answer index}, the first prediction per qid."""
    pred_map = {}
    for qid, p in zip(qids.tolist(), preds.tolist()):
        pred_map.setdefault(str(qid), int(p))
    write_json(os.path.join(save_dir, "predictions", f"{tag}.json"), pred_map)
