#!/usr/bin/env python3
"""Print a per-question-type table comparing the final evaluations of several trainer runs.

    python vqa_experiments/compare_vqa_runs.py REMIND=runs/remind Fine-Tune=runs/finetune Offline=runs/offline

Each argument is NAME=RUN_DIR (a ``--save_dir`` of ``vqa_trainer.py``). Columns: the runs; rows:
every question type, then overall accuracy, mean-per-type (the reference's metrics) and the
harmonic mean-per-type (an extra). ``--per_boundary`` adds overall accuracy at every evaluation
boundary. ``--markdown FILE`` also writes the tables as Markdown.
"""
import argparse
import json
import os
import sys

from remind.errors import InputError
from remind.runtime import run_cli


class CompareError(InputError):
    pass


def load_run(spec):
    if "=" not in spec:
        raise CompareError(f"expected NAME=RUN_DIR, got {spec!r}")
    name, run_dir = spec.split("=", 1)
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        raise CompareError(f"no results.json in {run_dir}")
    try:
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
    except json.JSONDecodeError as err:
        raise CompareError(f"{path}: not valid JSON ({err})") from None
    if not res.get("evaluations"):
        raise CompareError(f"{path}: the run has no evaluation yet")
    if not res.get("complete"):
        print(f"note: {path} is from an unfinished run; its last evaluation is used", file=sys.stderr)
    return name, res


def tables(runs, per_boundary=False):
    names = [n for n, _ in runs]
    finals = [r["evaluations"][-1] for _, r in runs]
    type_keys = sorted({k for f in finals for k in f["per_type"]}, key=int)
    rows = []
    for k in type_keys:
        label = next(f["per_type"][k]["name"] for f in finals if k in f["per_type"])
        count = next(f["per_type"][k]["count"] for f in finals if k in f["per_type"])
        rows.append([f"{label} (n={count})"] + [f"{100 * f['per_type'][k]['accuracy']:.2f}" if k in f["per_type"]
                                                else "-" for f in finals])
    rows.append(["overall accuracy"] + [f"{100 * f['overall']:.2f}" for f in finals])
    rows.append(["mean per type (MPT)"] + [f"{100 * f['mean_per_type']:.2f}" for f in finals])
    rows.append(["harmonic MPT (extra)"] + [f"{100 * f['extras']['harmonic_mean_per_type']:.2f}" for f in finals])
    out = [("Final accuracy (%) per question type", ["question type"] + names, rows)]
    if per_boundary:
        bounds = sorted({e.get("boundary") for _, r in runs for e in r["evaluations"] if e.get("boundary")})
        brows = []
        for b in bounds:
            row = [str(b)]
            for _, r in runs:
                hits = [e for e in r["evaluations"] if e.get("boundary") == b]
                row.append(f"{100 * hits[-1]['overall']:.2f}" if hits else "-")
            brows.append(row)
        out.append(("Overall accuracy (%) at each boundary (questions seen)", ["boundary"] + names, brows))
    return out


def render_text(title, header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([title, line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def render_markdown(title, header, rows):
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    p.add_argument("--per_boundary", action="store_true")
    p.add_argument("--markdown", default=None, metavar="FILE")
    args = p.parse_args(argv)
    runs = [load_run(s) for s in args.runs]
    out = tables(runs, args.per_boundary)
    print("\n\n".join(render_text(*t) for t in out))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write("\n\n".join(render_markdown(*t) for t in out) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main, prog="compare_vqa_runs")
