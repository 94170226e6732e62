"""The memory-order / precision benchmark runs and prints one row per network part."""
from benchmarks import layout_precision


def test_layout_precision_quick_run_prints_every_part(capsys):
    assert layout_precision.main(["--quick", "--reps", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for needle in ("NCHW fp32", "channels-last bf16", "base init: train step", "G: features",
                   "7 x 7", "2 x 2"):
        assert needle in out, needle
    assert out.count("(1.00x)") == 4  # every row's first cell is its own baseline
