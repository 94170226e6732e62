"""Smoke test of the soak benchmark: `benchmarks/soak_buffer.py --quick` runs and prints its table."""
import json

from benchmarks import soak_buffer


def test_quick_soak_prints_the_table(tmp_path, capsys):
    out_json = tmp_path / "soak.json"
    assert soak_buffer.main(["--quick", "--dir", str(tmp_path / "ckpt"), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    for needle in ("soak: 20,000 items x 7x7x32 uint8", "per sample, first 500", "per sample, last 500",
                   "per sample, end / start", "RSS at start of streaming", "RSS at end of streaming",
                   "peak RSS", "periodic checkpoints", "save full buffer", "load full buffer",
                   "restored buffer identical"):
        assert needle in out, f"{needle!r} missing from the benchmark output:\n{out}"
    res = json.loads(out_json.read_text())
    assert res["restored_identical"] is True
    assert res["capacity"] == 20_000 and res["samples"] == 4000 and len(res["checkpoint_s"]) == 4
    assert res["save_s"] > 0 and res["load_s"] > 0 and res["file_bytes"] > 20_000 * 7 * 7 * 32
    assert res["peak_rss"] >= res["rss_stream_start"] > 0
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["buffer.1.pt", "buffer.pt"]
