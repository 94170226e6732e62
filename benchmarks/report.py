"""The benchmark's printed tables: the step stage by stage per buffer size, the targets, the
reference approach vs ours by operation, and a whole streamed class on both sides."""
from benchmarks.step_shape import (C, H, KSUB, M, MAX_MEMORY_RATIO, MAX_NON_F_FRACTION, MAX_SAMPLE_EVICT_RATIO,
                                   NUM_CLASSES, NUM_REPLAY, STAGES, W)

STAGE_LABELS = {"encode": "encode (new map)", "sample": "sample + gather",
                "decode": "decode (101 maps)", "augment": "augment (crop + mixup)",
                "update_f": "F fwd + bwd + step", "buffer_add": "buffer add (+ evict)",
                "other": "other (outside stages)", "total": "total step"}


def fmt_ms(s):
    return f"{s * 1e3:9.2f}"


def fmt_size(n):
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            v = n / div
            return f"{v:g}{unit}"
    return str(n)


def _print_header(res):
    info = res["machine"]
    print(f"\nREMIND streaming step benchmark -- {info['cpu']}, {info['cores']} cores, "
          f"{info['threads']} threads, device {info['device']}"
          + (f" ({info['gpu']})" if "gpu" in info else "") + f", F in {res.get('memory_format', 'NCHW')}")
    print(f"torch {info['torch']}, faiss {info.get('faiss', '-')}, numpy {info['numpy']}; "
          f"load average before {res['load_before'][0]:.2f}, after {res['load_after'][0]:.2f}")
    print(f"shape: 1 new + {NUM_REPLAY} mixed pairs from {2 * NUM_REPLAY} replayed, {C}x{H}x{W} maps, "
          f"{M} codebooks x {KSUB}, {NUM_CLASSES} classes; medians of {res['steps']} steps after "
          f"{res['warmup']} warm-up\n")


def _print_stage_table(per_size):
    """Per-stage medians (ms and share of the step), one column per buffer size; returns the rule."""
    head = f"{'per step (ms)':<26}" + "".join(f"{fmt_size(r['size']):>12}" for r in per_size)
    print(head)
    print("-" * len(head))
    for row in STAGES + ["other", "total"]:
        cells = []
        for r in per_size:
            med = r["streaming"]["median_s"]
            pct = 100 * med[row] / med["total"]
            cells.append(f"{med[row] * 1e3:7.2f} {pct:3.0f}%" if row != "total" else f"{med[row] * 1e3:12.1f}")
        print(f"{STAGE_LABELS[row]:<26}" + "".join(f"{c:>12}" for c in cells))
    print("-" * len(head))


def _print_row(name, values, fmt="{:12.1f}"):
    print(f"{name:<26}" + "".join(fmt.format(v) for v in values))


def _print_target_row(name, values, fmt, passes):
    cells = [f"{fmt(v)} {'ok' if p else 'FAIL'}" for v, p in zip(values, passes)]
    print(f"{name:<26}" + "".join(f"{c:>12}" for c in cells))


def _print_targets(res):
    """Non-F share, sample+evict cost and buffer memory per size, each against its target."""
    per_size = res["per_size"]
    fr = [r["streaming"]["non_f_fraction"] for r in per_size]
    _print_target_row(f"non-F share (<= {MAX_NON_F_FRACTION:.0%})", fr, lambda v: f"{100 * v:.1f}%",
                      [v <= MAX_NON_F_FRACTION for v in fr])
    _print_row("sample(100)+add (us)", [r["sample_evict_us"]["both"] for r in per_size])
    _print_row("  of which sample (us)", [r["sample_evict_us"]["sample"] for r in per_size])
    _print_row("  of which add (us)", [r["sample_evict_us"]["add"] for r in per_size])
    mem = [r["memory_ratio"] for r in per_size]
    _print_row("buffer.nbytes (MB)", [r["buffer_nbytes"] / 1e6 for r in per_size])
    _print_row("raw codes (MB)", [r["raw_code_bytes"] / 1e6 for r in per_size])
    _print_target_row(f"memory ratio (<= {MAX_MEMORY_RATIO})", mem, lambda v: f"{v:.3f}x",
                      [v <= MAX_MEMORY_RATIO for v in mem])
    _print_row("RSS growth of fill (MB)", [r["fill_rss_bytes"] / 1e6 for r in per_size])
    _print_row("fill time (s)", [r["fill_s"] for r in per_size])
    ratio = res["sample_evict_ratio"]
    print(f"\nsample+evict {fmt_size(per_size[-1]['size'])} vs {fmt_size(per_size[0]['size'])}: {ratio:.2f}x "
          f"(target <= {MAX_SAMPLE_EVICT_RATIO}x): {'ok' if ratio <= MAX_SAMPLE_EVICT_RATIO else 'FAIL'}")
    print(f"targets: {'ALL PASS' if res['all_pass'] else 'SOME FAIL'}")


def _print_reference(res):
    print(f"\nreference approach vs ours (measured here, {res['reference_threads']} thread(s) on both sides as in "
          f"fit_sample's small stages; medians of {res['ref_reps']} reps, eviction rows {5 * res['ref_reps']})")
    head = f"{'operation':<40}{'reference':>12}{'ours':>12}{'ratio':>9}  reference / ours"
    print(head)
    print("-" * len(head))
    for r in res["reference"]:
        ref, ours = r["ref_s"], r["ours_s"]
        print(f"{r['what']:<40}{fmt_ms(ref):>9} ms{fmt_ms(ours):>9} ms{ref / ours:8.1f}x  "
              f"{r['reference']} / {r['ours']}")
    print(f"(building the reference's dict of {res['per_size'][-1]['size']:,} per-item arrays took "
          f"{res['ref_dict_build_s']:.1f} s)")


def _print_class_stream(cs):
    """Wall time of one streamed class per side, samples/s and their ratio, per map size."""
    print(f"\nwhole streamed class, ours (fit_sample) vs the reference's step, same run\n"
          f"({cs['buffer']:,}-item full buffers, {cs['warmup']} warm-up samples per side, sides taking turns "
          f"every {cs['block']} samples; ratio > 1: ours streams faster)")
    head = (f"{'maps':<8}{'samples':>8}{'ours (s)':>11}{'reference (s)':>15}{'ours (1/s)':>12}"
            f"{'reference (1/s)':>17}{'ours / reference':>18}")
    print(head)
    print("-" * len(head))
    for r in cs["rows"]:
        print(f"{r['map']}x{r['map']:<6}{r['samples']:>8}{r['ours_s']:>11.2f}{r['ref_s']:>15.2f}"
              f"{r['ours_sps']:>12.2f}{r['ref_sps']:>17.2f}{r['ratio']:>17.2f}x")
    pr = cs["projection"]
    print(f"projected full ImageNet stream ({pr['samples']:,} samples, {pr['map']}x{pr['map']} rates): "
          f"{pr['ours_h']:.1f} h ours, {pr['ref_h']:.1f} h reference")


def _print_ops(ops):
    """Operators dispatched per stage of one step (kernel launches on a GPU)."""
    parts = ", ".join(f"{STAGE_LABELS.get(s, s).split(' (')[0]} {ops[s]}" for s in STAGES + ["other"] if s in ops)
    print(f"torch operators per step (at least one kernel launch each on a GPU): {parts}; "
          f"total {sum(ops.values())}")


def print_report(res):
    _print_header(res)
    _print_stage_table(res["per_size"])
    if "ops_per_step" in res:
        _print_ops(res["ops_per_step"])
    _print_targets(res)
    _print_reference(res)
    if "class_stream" in res:
        _print_class_stream(res["class_stream"])
    info = res["machine"]
    print(f"\nwall time {res['wall_s']:.0f} s. Shared 2-core machine: expect about +-15% run to run.")
    busy = max(res["load_before"][0], res["load_after"][0])
    if busy > info["cores"]:
        print(f"WARNING: load average {busy:.1f} on {info['cores']} cores: other processes competed for "
              f"the CPU during this run; its times (multi-threaded ones most) are inflated.")
