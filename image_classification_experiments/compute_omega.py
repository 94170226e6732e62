"""Omega_all of streaming runs against the offline run, with curves, base-class forgetting and plots.

  python compute_omega.py --offline out/offline REMIND=out/remind fine-tune=out/finetune \\
      --metric top1 --markdown omega.md --plot omega.png --json omega.json

Each run is ``[NAME=]PATH``, PATH a run's ``--save_dir`` or its ``results.json``: the streaming
scripts write ``{"evaluations": [{"max_class": .., "seen_classes_top1": .., "seen_classes_top5":
.., "base_classes_top1": .., ...}, ...]}`` (CORe50 runs add ``samples_seen``). The offline run
(trained on everything seen up to each point) must have the same evaluation points.

Per method:
- Omega_all = mean over evaluation points t of acc_t / acc_offline_t (seen-class top-1 or top-5,
  ``--metric``; Kemker et al. 2018, Hayes et al. 2018); 1.0 is the offline model's value;
- the curve (accuracy at every point) and the final accuracy;
- forgetting on the base classes: base accuracy at the first point minus at the last, and the
  largest fall from any earlier point's base accuracy to a later one ("max drop"), in points.
"""
import argparse
import json
import math
import os

from image_classification_experiments.plots import save_accuracy_plot
from remind.checkpoint import atomic_write
from remind.errors import InputError
from remind.metrics import omega
from remind.runtime import run_cli, write_json

POINT_KEYS = ("max_class", "samples_seen")
X_LABELS = {"max_class": "classes seen", "samples_seen": "training samples seen"}


class OmegaError(InputError):
    """Missing or mismatched results files."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="[NAME=]PATH", help="a streaming run's save_dir or results.json")
    p.add_argument("--offline", required=True, metavar="PATH", help="the offline run's save_dir or results.json")
    p.add_argument("--metric", choices=["top1", "top5"], default="top1", help="seen-class accuracy used")
    p.add_argument("--x", choices=["auto", "classes", "samples"], default="auto",
                   help="plot against classes seen (max_class) or samples seen (samples_seen); auto: "
                        "classes when they grow at every point, else samples")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the tables as Markdown")
    p.add_argument("--plot", default=None, metavar="PATH", help="write the accuracy curves as a PNG")
    p.add_argument("--json", default=None, metavar="PATH", help="write the summary as JSON")
    p.add_argument("--title", default=None, help="title of the plot")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ reading
def results_path(path):
    """``path`` itself if it is a file, else ``path/results.json``."""
    return path if os.path.isfile(path) else os.path.join(path, "results.json")


def read_evaluations(path):
    """(results.json path, its list of evaluation dicts)."""
    file = results_path(path)
    try:
        with open(file, encoding="utf-8") as f:
            evaluations = json.load(f)["evaluations"]
    except FileNotFoundError:
        raise OmegaError(f"{file}: not found (did the run finish?)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise OmegaError(f"{file}: not a streaming run's results.json ({type(err).__name__}: {err})") from None
    if not isinstance(evaluations, list) or not evaluations or not all(isinstance(r, dict) for r in evaluations):
        raise OmegaError(f"{file}: no evaluations")
    return file, evaluations


def parse_run(spec):
    """'NAME=PATH' -> (NAME, PATH); a bare PATH is named after its run folder."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        folder = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else os.path.abspath(path)
        name = os.path.basename(folder.rstrip(os.sep))
    if not name or not path:
        raise OmegaError(f"run {spec!r}: expected [NAME=]PATH")
    return name, path


# ------------------------------------------------------------------------ points, curves
def shared_point_keys(*runs):
    """The point keys (max_class, samples_seen) every evaluation of every run carries."""
    keys = [k for k in POINT_KEYS if all(k in r for evaluations in runs for r in evaluations)]
    if not keys:
        raise OmegaError("the results name their evaluation points by neither max_class nor samples_seen")
    return keys


def points_of(evaluations, keys):
    return [tuple(r[k] for k in keys) for r in evaluations]


def check_same_points(name, file, evaluations, offline_file, offline, keys):
    mine, theirs = points_of(evaluations, keys), points_of(offline, keys)
    if mine != theirs:
        raise OmegaError(f"{file} ({name}): evaluation points ({', '.join(keys)}) {_short(mine)} differ "
                         f"from the offline run's {_short(theirs)} in {offline_file}")


def _short(points, limit=6):
    shown = [p[0] if len(p) == 1 else p for p in points]
    text = ", ".join(str(p) for p in shown[:limit])
    return f"[{text}{', ...' if len(shown) > limit else ''}] ({len(shown)} points)"


def curve(file, evaluations, key):
    """Values of ``key`` at every point; missing or non-numeric values are an error."""
    values = []
    for i, r in enumerate(evaluations):
        value = r.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise OmegaError(f"{file}: evaluation {i + 1} has no number {key!r}")
        values.append(float(value))
    return values


def _number(value):
    """A float, NaN for a missing value (a run without base classes writes none)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def base_forgetting(values):
    """(first - last, largest fall from an earlier point to a later one); NaNs are skipped."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    peak, drop = values[0], 0.0
    for v in values[1:]:
        drop = max(drop, peak - v)
        peak = max(peak, v)
    return values[0] - values[-1], drop


def method_summary(name, file, evaluations, offline_curve, metric):
    """Omega_all, curve, final accuracy and base forgetting of one run."""
    acc = curve(file, evaluations, f"seen_classes_{metric}")
    base = [_number(r.get(f"base_classes_{metric}")) for r in evaluations]
    forgetting, max_drop = base_forgetting(base)
    return {"name": name, "path": file, "omega_all": omega(acc, offline_curve), "final": acc[-1],
            "curve": acc, "base_curve": base, "base_forgetting": forgetting, "base_max_drop": max_drop}


def summarize(runs, offline_path, metric="top1"):
    """{metric, point_keys, points, offline, methods}: everything the tables and the plot show.
    ``runs``: [(name, path)]."""
    offline_file, offline = read_evaluations(offline_path)
    loaded = [(name, *read_evaluations(path)) for name, path in runs]
    keys = shared_point_keys(offline, *[ev for _, _, ev in loaded])
    offline_curve = curve(offline_file, offline, f"seen_classes_{metric}")
    for i, value in enumerate(offline_curve):
        if not value > 0:
            raise OmegaError(f"{offline_file}: offline accuracy {value} at evaluation {i + 1}; Omega "
                             "needs a positive offline accuracy at every point")
    methods = []
    for name, file, evaluations in loaded:
        check_same_points(name, file, evaluations, offline_file, offline, keys)
        methods.append(method_summary(name, file, evaluations, offline_curve, metric))
    reference = method_summary("offline", offline_file, offline, offline_curve, metric)
    return {"metric": f"seen_classes_{metric}", "point_keys": keys,
            "points": {k: [r[k] for r in offline] for k in keys}, "offline": reference, "methods": methods}


def x_key(summary, choice):
    """The point key the plot and the curve table run along."""
    points = summary["points"]
    wanted = {"classes": "max_class", "samples": "samples_seen"}.get(choice)
    if wanted is not None:
        if wanted not in points:
            raise OmegaError(f"--x {choice}: the results have no {wanted!r} at every evaluation")
        return wanted
    classes = points.get("max_class")
    if classes is not None and all(b > a for a, b in zip(classes, classes[1:])):
        return "max_class"
    return "samples_seen" if "samples_seen" in points else summary["point_keys"][0]


# ------------------------------------------------------------------------------- reports
def fmt(value, digits=2):
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def summary_rows(summary):
    metric = summary["metric"].rsplit("_", 1)[1]
    header = ["method", f"Omega_all ({metric})", f"final {metric} (%)", "base forgetting (pts)",
              "base max drop (pts)"]
    rows = [[m["name"], fmt(m["omega_all"], 3), fmt(m["final"]), fmt(m["base_forgetting"]),
             fmt(m["base_max_drop"])] for m in summary["methods"] + [summary["offline"]]]
    rows[-1][0] = "offline (upper bound)"
    return header, rows


def curve_rows(summary, key):
    header = [X_LABELS[key]] + [m["name"] for m in summary["methods"]] + ["offline"]
    series = [m["curve"] for m in summary["methods"]] + [summary["offline"]["curve"]]
    rows = [[str(x)] + [fmt(s[i]) for s in series] for i, x in enumerate(summary["points"][key])]
    return header, rows


def render(header, rows, markdown):
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])])  # noqa: E731
    return "\n".join([line(header)] + [line(r) for r in rows])


def report(summary, key, markdown):
    metric = summary["metric"]
    return (f"Omega_all and final accuracy ({metric}, %):\n{render(*summary_rows(summary), markdown)}\n\n"
            f"{metric} (%) at each evaluation point:\n{render(*curve_rows(summary, key), markdown)}\n")


def plot(path, summary, key, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    xs = summary["points"][key]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in summary["methods"]:
        ax.plot(xs, m["curve"], marker="o", label=f"{m['name']} (Omega {m['omega_all']:.3f})")
    ax.plot(xs, summary["offline"]["curve"], "k--", marker=".", label="offline")
    ax.set_xlabel(X_LABELS[key])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(summary["metric"].replace("_classes_", "-class ").replace("_", " ") + " (%)")
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title)
    save_accuracy_plot(fig, ax, path, dpi=110)


def _json_safe(obj):
    """NaN -> null, so the file is standard JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_text(path, text):
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def main(argv=None):
    args = parse_args(argv)
    runs = [parse_run(spec) for spec in args.runs]
    names = [name for name, _ in runs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise OmegaError(f"two runs named {duplicate!r}; name them with NAME=PATH")
    summary = summarize(runs, args.offline, args.metric)
    key = x_key(summary, args.x)
    print(report(summary, key, markdown=False), end="")
    if args.markdown:
        write_text(args.markdown, report(summary, key, markdown=True))
    if args.json:
        write_json(args.json, _json_safe({**summary, "x": key}))
    if args.plot:
        plot(args.plot, summary, key, args.title)
    return 0


if __name__ == "__main__":
    run_cli(main, prog="compute_omega.py")
