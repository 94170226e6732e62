"""Print seen-class accuracy after each evaluation point for several streaming runs side by side.

Each run is ``NAME=DIR[,DIR...]`` where every DIR is the ``--save_dir`` of imagenet_experiment.py
(its results.json); several DIRs under one name are seeds of the same method and are averaged.
Example (REMIND vs fine-tuning, three seeds each):

  python compare_runs.py REMIND=out/seed_0/remind,out/seed_1/remind,out/seed_2/remind \\
                         fine-tune=out/seed_0/finetune,out/seed_1/finetune,out/seed_2/finetune

prints one row per evaluation point (classes seen) with the mean seen-class top-1 of each method
(and each seed's value with ``--per_seed``); ``--markdown`` prints a Markdown table, ``--json FILE``
also writes the numbers, ``--plot FILE`` draws the means (with the seeds' range).
"""
import argparse
import json
import math
import os

from remind.runtime import write_json
from remind.runtime import run_cli
from image_classification_experiments.imagenet_folders import DataError
from image_classification_experiments.plots import save_accuracy_plot


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="NAME=DIR[,DIR...]")
    p.add_argument("--metric", default="seen_classes_top1",
                   help="key of the evaluations in results.json (e.g. seen_classes_top5, base_classes_top1)")
    p.add_argument("--per_seed", action="store_true", help="also print every seed's value")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--json", default=None, help="also write the table to this JSON file")
    p.add_argument("--plot", default=None, help="also plot the mean of every run to this PNG file")
    p.add_argument("--title", default=None, help="title of the plot")
    return p.parse_args(argv)


def read_results(save_dir):
    path = os.path.join(save_dir, "results.json")
    try:
        with open(path) as f:
            results = json.load(f)
        return results["evaluations"]
    except FileNotFoundError:
        raise DataError(f"{path}: not found (did the run finish?)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a results.json of imagenet_experiment.py ({err})") from None


def parse_run(spec):
    name, sep, dirs = spec.partition("=")
    if not sep or not name or not dirs:
        raise DataError(f"run {spec!r}: expected NAME=DIR[,DIR...]")
    return name, [d for d in dirs.split(",") if d]


def collect(runs, metric):
    """{name: {max_class: [value per seed]}} and the sorted evaluation points."""
    table, points = {}, set()
    for name, dirs in runs:
        per_point = {}
        for d in dirs:
            for r in read_results(d):
                if metric not in r:
                    raise DataError(f"{d}/results.json: no metric {metric!r}")
                per_point.setdefault(int(r["max_class"]), []).append(float(r[metric]))
        table[name] = per_point
        points.update(per_point)
    return table, sorted(points)


def mean(values):
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


def std(values):
    values = [v for v in values if v == v]
    if len(values) < 2:
        return float("nan")
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def cell(values, per_seed):
    if not values:
        return "-"
    text = f"{mean(values):.2f}"
    if len(values) > 1:
        text += f" +- {std(values):.2f}"
    if per_seed and len(values) > 1:
        text += " (" + ", ".join(f"{v:.2f}" for v in values) + ")"
    return text


def format_table(table, points, per_seed, markdown):
    names = list(table)
    header = ["classes seen"] + [f"{n} (n={max((len(v) for v in table[n].values()), default=0)})"
                                 for n in names]
    rows = [[str(p)] + [cell(table[n].get(p, []), per_seed) for n in names] for p in points]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(header)] + [fmt(r) for r in rows])


def plot(path, table, metric, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, per_point in table.items():
        xs = sorted(per_point)
        ax.plot(xs, [mean(per_point[x]) for x in xs], marker="o",
                label=f"{name} (mean of {max(len(v) for v in per_point.values())})")
        if any(len(per_point[x]) > 1 for x in xs):
            ax.fill_between(xs, [min(per_point[x]) for x in xs], [max(per_point[x]) for x in xs], alpha=0.2)
    ax.set_xlabel("classes seen")
    ax.set_ylabel(metric.replace("_classes_", "-class ").replace("_", " ") + " (%)")
    if title:
        ax.set_title(title)
    ax.set_ylim(0, 100)
    save_accuracy_plot(fig, ax, path, dpi=100)


def main(argv=None):
    args = parse_args(argv)
    runs = [parse_run(s) for s in args.runs]
    table, points = collect(runs, args.metric)
    print(f"{args.metric} (%), mean +- std over seeds")
    print(format_table(table, points, args.per_seed, args.markdown))
    if args.json:
        write_json(args.json, {"metric": args.metric, "points": points,
                               "runs": {n: {str(p): v for p, v in t.items()} for n, t in table.items()},
                               "mean": {n: {str(p): mean(v) for p, v in t.items()} for n, t in table.items()}})
    if args.plot:
        plot(args.plot, table, args.metric, args.title)


if __name__ == "__main__":
    run_cli(main, prog="compare_runs.py")
