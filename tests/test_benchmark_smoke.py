"""Smoke test of the core benchmark: `benchmarks/streaming_step.py --quick` runs and prints its tables."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "streaming_step.py"


def test_quick_benchmark_prints_the_tables(tmp_path):
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--json", str(out_json)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for needle in ("per step (ms)", "encode (new map)", "sample + gather", "decode (101 maps)",
                   "augment (crop + mixup)", "F fwd + bwd + step", "buffer add (+ evict)",
                   "total step", "non-F share", "sample(100)+add (us)", "memory ratio",
                   "sample+evict 5k vs 2k", "reference approach vs ours",
                   "latent crops, 51 maps", "latent crops, 101 maps", "list.remove on a 959,665-item list",
                   "whole streamed class", "2x2", "7x7", "projected full ImageNet stream (1,153,050 samples"):
        assert needle in out, f"{needle!r} missing from the benchmark output:\n{out}"
    res = json.loads(out_json.read_text())
    assert [e["size"] for e in res["per_size"]] == [2000, 5000]
    for e in res["per_size"]:
        med = e["streaming"]["median_s"]
        assert med["update_f"] > 0 and med["total"] >= med["update_f"]
        assert e["memory_ratio"] >= 1.0
    assert {r["what"] for r in res["reference"]} >= {"latent crops, 51 maps", "latent crops, 101 maps"}
    cs = res["class_stream"]
    assert [r["map"] for r in cs["rows"]] == [2, 7] and cs["buffer"] == 2000
    assert all(r["samples"] == 3 and r["ours_sps"] > 0 and r["ref_sps"] > 0 for r in cs["rows"])
    assert cs["projection"]["ours_h"] > 0 and cs["projection"]["ref_h"] > 0
    ops = res["ops_per_step"]  # operators dispatched by one step, per stage
    assert "torch operators per step" in out
    assert set(ops) >= {"encode", "sample", "decode", "augment", "update_f", "buffer_add"}
    assert ops["update_f"] > ops["decode"] > 0


def test_reference_bookkeeping_keeps_its_lists_consistent():
    """The reference approach the benchmark times: every evict adds one id and removes one, from the
    largest class, so the list, the store and the class lists keep holding the same ids."""
    import numpy as np

    from benchmarks.reference_step import ReferenceBookkeeping, ref_draw

    book = ReferenceBookkeeping(3000, seed=0)
    for _ in range(50):
        book.evict()
    ids = set(book.ids)
    assert len(book.ids) == len(ids) == 3000 and set(book.store) == ids
    assert set().union(*map(set, book.class_lists.values())) == ids
    drawn = ref_draw(3000, 100, np.random.default_rng(0))
    assert len(set(drawn)) == 100 and all(0 <= i < 3000 for i in drawn)
