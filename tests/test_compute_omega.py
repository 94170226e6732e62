"""compute_omega.py on hand-computed numbers, its outputs, and its one-line errors."""
import json
import os

import pytest

from image_classification_experiments import compute_omega as co
from remind.runtime import run_cli

# seen / base top-1 and top-5 (%) after 2, 4 and 6 classes
OFFLINE = {"top1": [80.0, 60.0, 50.0], "top5": [100.0, 90.0, 80.0], "base1": [80.0, 70.0, 70.0]}
REMIND = {"top1": [72.0, 45.0, 40.0], "top5": [100.0, 81.0, 72.0], "base1": [72.0, 60.0, 65.0]}
FINETUNE = {"top1": [80.0, 30.0, 25.0], "top5": [100.0, 60.0, 40.0], "base1": [80.0, 20.0, 10.0]}
# by hand: REMIND top-1 ratios 0.9, 0.75, 0.8 -> 0.816667; top-5 1.0, 0.9, 0.9 -> 0.933333
#          fine-tune top-1 1.0, 0.5, 0.5 -> 0.666667; top-5 1.0, 0.666667, 0.5 -> 0.722222
#          REMIND base: first - last = 72 - 65 = 7; largest fall 72 -> 60 = 12
#          fine-tune base: 80 - 10 = 70 = largest fall


def write_run(folder, numbers, points=(2, 4, 6), samples=None):
    evaluations = []
    for i, p in enumerate(points):
        r = {"max_class": p, "seen_classes_top1": numbers["top1"][i], "seen_classes_top5": numbers["top5"][i],
             "base_classes_top1": numbers["base1"][i], "base_classes_top5": 100.0,
             "non_base_classes_top1": float("nan")}
        if samples is not None:
            r["samples_seen"] = samples[i]
        evaluations.append(r)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"expt_name": os.path.basename(folder), "evaluations": evaluations, "final": evaluations[-1]}, f)
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    return {"offline": write_run(tmp_path / "offline", OFFLINE), "remind": write_run(tmp_path / "remind", REMIND),
            "finetune": write_run(tmp_path / "finetune", FINETUNE)}


def test_hand_computed_omega_forgetting_and_final(runs):
    s = co.summarize([("REMIND", runs["remind"]), ("fine-tune", runs["finetune"])], runs["offline"], "top1")
    remind, finetune = s["methods"]
    assert remind["omega_all"] == pytest.approx((0.9 + 0.75 + 0.8) / 3)
    assert finetune["omega_all"] == pytest.approx(2 / 3)
    assert remind["final"] == 40.0 and finetune["final"] == 25.0
    assert remind["curve"] == REMIND["top1"]
    assert (remind["base_forgetting"], remind["base_max_drop"]) == (7.0, 12.0)
    assert (finetune["base_forgetting"], finetune["base_max_drop"]) == (70.0, 70.0)
    assert s["offline"]["omega_all"] == 1.0
    assert s["points"] == {"max_class": [2, 4, 6]}

    top5 = co.summarize([("REMIND", runs["remind"]), ("fine-tune", runs["finetune"])], runs["offline"], "top5")
    assert top5["methods"][0]["omega_all"] == pytest.approx((1.0 + 0.9 + 0.9) / 3)
    assert top5["methods"][1]["omega_all"] == pytest.approx((1.0 + 60 / 90 + 0.5) / 3)
    assert top5["methods"][0]["base_forgetting"] == 0.0


def test_base_forgetting_by_hand():
    assert co.base_forgetting([50.0, 70.0, 40.0, 60.0]) == (-10.0, 30.0)  # fell 70 -> 40
    assert co.base_forgetting([60.0, 60.0]) == (0.0, 0.0)
    first, drop = co.base_forgetting([float("nan")])
    assert first != first and drop != drop


def test_main_prints_and_writes_markdown_json_plot(runs, tmp_path, capsys):
    out = tmp_path / "report"
    rc = co.main([f"REMIND={runs['remind']}", f"fine-tune={runs['finetune']}/results.json", "--offline",
                  runs["offline"], "--markdown", str(out / "omega.md"), "--json", str(out / "omega.json"),
                  "--plot", str(out / "omega.png"), "--title", "test"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "REMIND" in text and "0.817" in text and "0.667" in text and "offline (upper bound)" in text
    md = (out / "omega.md").read_text()
    assert "| REMIND | 0.817 | 40.00 | 7.00 | 12.00 |" in md
    assert "| fine-tune | 0.667 | 25.00 | 70.00 | 70.00 |" in md
    assert "| offline (upper bound) | 1.000 | 50.00 | 10.00 | 10.00 |" in md
    assert "| 4 | 45.00 | 30.00 | 60.00 |" in md
    summary = json.loads((out / "omega.json").read_text())
    assert summary["x"] == "max_class" and summary["metric"] == "seen_classes_top1"
    assert [m["name"] for m in summary["methods"]] == ["REMIND", "fine-tune"]
    assert summary["methods"][0]["omega_all"] == pytest.approx(0.816667, abs=1e-6)
    assert (out / "omega.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bare_paths_are_named_after_their_folder(runs, capsys):
    co.main([runs["remind"], os.path.join(runs["finetune"], "results.json"), "--offline", runs["offline"]])
    text = capsys.readouterr().out
    assert "remind" in text and "finetune" in text


def test_samples_axis_for_core50_style_results(tmp_path, capsys):
    samples = [600, 1200, 1800]
    offline = write_run(tmp_path / "off", OFFLINE, points=(10, 10, 10), samples=samples)
    remind = write_run(tmp_path / "rem", REMIND, points=(10, 10, 10), samples=samples)
    co.main([f"REMIND={remind}", "--offline", offline, "--json", str(tmp_path / "o.json")])
    summary = json.loads((tmp_path / "o.json").read_text())
    assert summary["x"] == "samples_seen" and summary["point_keys"] == ["max_class", "samples_seen"]
    assert "training samples seen" in capsys.readouterr().out
    # another ordering evaluated at the same sample counts but other class counts is a mismatch
    other = write_run(tmp_path / "other", REMIND, points=(1, 5, 10), samples=samples)
    with pytest.raises(co.OmegaError, match="evaluation points"):
        co.summarize([("x", other)], offline)
    with pytest.raises(co.OmegaError, match="--x samples"):
        co.main([f"REMIND={write_run(tmp_path / 'r2', REMIND)}", "--offline",
                 write_run(tmp_path / "o2", OFFLINE), "--x", "samples"])


def _cli_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(co.main, argv, prog="compute_omega.py")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("compute_omega.py: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_mismatched_points_is_one_line(runs, tmp_path, capsys):
    short = write_run(tmp_path / "short", REMIND, points=(2, 4, 8))
    err = _cli_error([f"short={short}", "--offline", runs["offline"]], capsys)
    assert "evaluation points" in err and "[2, 4, 8]" in err and "[2, 4, 6]" in err and "short" in err


def test_missing_and_malformed_files_are_one_line(runs, tmp_path, capsys):
    err = _cli_error([f"x={tmp_path / 'nowhere'}", "--offline", runs["offline"]], capsys)
    assert os.path.join(str(tmp_path / "nowhere"), "results.json") in err and "not found" in err
    assert "not found" in _cli_error([runs["remind"], "--offline", str(tmp_path / "nope")], capsys)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{\"final\": {}}")
    assert "not a streaming run's results.json" in _cli_error([str(bad), "--offline", runs["offline"]], capsys)
    (bad / "results.json").write_text("{\"evaluations\": [{\"max_class\": 2}, {\"max_class\": 4}, "
                                      "{\"max_class\": 6}]}")
    assert "no number 'seen_classes_top1'" in _cli_error([str(bad), "--offline", runs["offline"]], capsys)


def test_zero_offline_accuracy_and_duplicate_names(runs, tmp_path, capsys):
    zero = write_run(tmp_path / "zero", {**OFFLINE, "top1": [80.0, 0.0, 50.0]})
    assert "positive offline accuracy" in _cli_error([runs["remind"], "--offline", zero], capsys)
    assert "two runs named 'a'" in _cli_error([f"a={runs['remind']}", f"a={runs['finetune']}", "--offline",
                                               runs["offline"]], capsys)
