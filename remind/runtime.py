"""What every script of every experiment family shares, and no dataset knows.

- ``InputError`` and ``run_cli``: bad input becomes one line on stderr and exit status 2 (the
  argparse convention), never a traceback; Ctrl-C exits 130.
- ``write_json`` / ``write_csv``: one format each, written atomically.
- ``resolve_device``, ``seed_everything``, ``RunLog``.
- ``capture_rng`` / ``restore_rng``: every generator a run draws from (Python, NumPy's global,
  torch's CPU and CUDA), so a resumed run draws what an uninterrupted one would have.
- Run checkpoints (``save_run_checkpoint`` / ``load_run_checkpoint``): one format with a kind, a
  format version and a fingerprint. The fingerprint is an allowlist: the settings that define
  what a run computes (``fingerprint``); anything else (paths, threads, progress bars, how often
  to checkpoint) may change between a run and its resume.

Torch is imported lazily, so a script that fails on its command line answers at once.
"""
import csv
import json
import os
import sys

from remind.checkpoint import atomic_write
from remind.errors import InputError

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130
RUN_CHECKPOINT_VERSION = 1


def run_cli(main, argv=None, prog=None):
    """Run ``main(argv)`` as a script: an ``InputError`` -> ``[prog: ]error: <msg>``, exit 2."""
    prefix = f"{prog}: " if prog else ""
    try:
        rc = main(argv)
    except KeyboardInterrupt:
        print(f"{prefix}interrupted; continue with --resume from the last checkpoint", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except InputError as err:  # only input errors are shortened; anything else is a bug
        print(f"{prefix}error: {err}", file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)
    sys.exit(rc or 0)


# ------------------------------------------------------------------------------- outputs
def write_json(path, obj):
    """Indented UTF-8 JSON with a final newline, written atomically (folders made as needed)."""
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")


def write_csv(path, rows, header):
    """``rows``: dicts keyed by ``header`` or sequences in its order; written atomically."""
    with atomic_write(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for row in rows:
                w.writerow([row.get(k) for k in header] if isinstance(row, dict) else row)


class RunLog:
    """Print a line (above any progress bar) and append it to ``<save_dir>/<name>``."""

    def __init__(self, save_dir, name="log.txt"):
        self.path = os.path.join(save_dir, name)

    def __call__(self, msg):
        from tqdm import tqdm

        tqdm.write(msg)
        sys.stdout.flush()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(msg + "\n")


class StartupLog:
    """The run's log before its folder may be written: lines are printed at once and kept, and go
    to ``<save_dir>/log.txt`` only once every input has been checked (``open``), so a run that
    fails on bad input writes nothing."""

    def __init__(self):
        self.lines, self.run_log = [], None

    def __call__(self, msg):
        if self.run_log is not None:
            self.run_log(msg)
            return
        from tqdm import tqdm

        tqdm.write(msg)
        sys.stdout.flush()
        self.lines.append(msg)

    def open(self, save_dir):
        os.makedirs(save_dir, exist_ok=True)
        self.run_log = RunLog(save_dir)
        with open(self.run_log.path, "a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in self.lines)
        self.lines = []


def command_line(argv=None):
    """The command as typed (for the log): script name and arguments."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([os.path.basename(sys.argv[0])] + [str(a) for a in args])


# ------------------------------------------------------------------------- command lines
def add_run_arguments(parser, *, seed=True, checkpoints=False, checkpoint_interval=0,
                      checkpoint_interval_min=15.0):
    """The flags every script means the same by: --device, --seed, --num_threads, --progress, --tf32 and,
    for long runs, --checkpoint_interval (steps), --checkpoint_interval_min and --stop_after_steps.
    (Old spellings stay as aliases: --threads, --no_progress, --stop_after_samples.)"""
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="makes a CPU run bit-for-bit repeatable")
    parser.add_argument("--num_threads", "--threads", dest="num_threads", type=int, default=0,
                        help="torch and faiss CPU threads (0: their defaults)")
    parser.add_argument("--progress", choices=["auto", "on", "off"], default="auto", help="progress bars")
    parser.add_argument("--no_progress", dest="progress", action="store_const", const="off",
                        help="same as --progress off")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 matmuls and convolutions on CUDA (faster on Ampere and later, "
                             "not bit-for-bit fp32; default off: the paper's numbers are fp32)")
    if checkpoints:
        parser.add_argument("--checkpoint_interval", type=int, default=checkpoint_interval,
                            help="also checkpoint every N optimizer steps (0: off)")
        parser.add_argument("--checkpoint_interval_min", type=float, default=checkpoint_interval_min,
                            help="also checkpoint after this many minutes (0: off)")
        parser.add_argument("--stop_after_steps", "--stop_after_samples", dest="stop_after_steps", type=int,
                            default=None, help="checkpoint and stop after N optimizer steps (continue with --resume)")


def progress_disabled(args):
    """tqdm's ``disable`` for --progress: None (auto: off when not a terminal), False or True."""
    return {"auto": None, "on": False, "off": True}[args.progress]


# ------------------------------------------------------------------------------ devices
def default_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name=None):
    """A torch.device from ``--device`` (None: cuda if available); CUDA without one is an input error."""
    import torch

    name = name or default_device()
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InputError(f"--device {name}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return device


def configure_tf32(enabled):
    """TF32 for CUDA matmuls and cuDNN convolutions on (``--tf32``) or off (the default).

    PyTorch leaves cuDNN's TF32 on by default, so without this call convolutions on Ampere and
    later GPUs run with a 10-bit mantissa; the paper's numbers are fp32. No effect on the CPU."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def set_cpu_threads(num_threads):
    """Pin torch's and faiss's CPU thread pools (0 or None: leave their defaults)."""
    if num_threads:
        import faiss
        import torch

        torch.set_num_threads(num_threads)
        faiss.omp_set_num_threads(num_threads)


# ---------------------------------------------------------------------------- randomness
def seed_everything(seed):
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng():
    import random

    import numpy as np
    import torch

    return {"python": _python_rng_to_safe(random.getstate()), "numpy": _numpy_rng_to_safe(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state):
    import random

    import numpy as np
    import torch

    if state.get("python") is not None:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    if state.get("numpy") is not None:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_rng_to_safe(state):
    import torch

    version, internal, gauss = state
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def _numpy_rng_to_safe(state):
    import torch

    kind, keys, pos, has_gauss, cached = state
    return [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)]


# ------------------------------------------------------------------------ run checkpoints
def fingerprint(settings, keys):
    """The allowlisted settings that define a run, as plain JSON values."""
    if not isinstance(settings, dict):
        settings = vars(settings)
    return json.loads(json.dumps({k: settings.get(k) for k in keys}))


def fingerprint_diff(saved, current, prefix=""):
    """The first setting that differs, as ``name: saved vs current`` (nested dicts by dotted name)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current), key=str):
            if saved.get(key) != current.get(key):
                return fingerprint_diff(saved.get(key), current.get(key), f"{prefix}{key}.")
        return None
    return f"{prefix.rstrip('.')}: {saved!r} vs {current!r}"


def save_run_checkpoint(path, kind, run_fingerprint, payload, *, keep=2):
    """Atomically save ``payload`` with the run's kind, format version and fingerprint, keeping the
    ``keep`` newest versions (``path``, then ``<name>.1<ext>``, ...; see ``remind.checkpoint``).
    A full disk is a one-line ``DiskFullError`` and leaves the previous versions intact."""
    from remind.checkpoint import save_checkpoint

    save_checkpoint(path, {"format": kind, "format_version": RUN_CHECKPOINT_VERSION,
                           "fingerprint": run_fingerprint, **payload}, keep=keep)


def load_run_checkpoint(path, kind, run_fingerprint=None, map_location="cpu", *, fallback=True,
                        return_path=False):
    """Load the newest good run checkpoint of ``kind`` at ``path`` (or, with ``return_path``,
    ``(checkpoint, path_loaded)``).

    A newest version that is truncated, damaged, of another kind or of a newer format is refused
    and (``fallback``) the next older one is tried, with a one-line warning on stderr naming each
    refused file and why; none good is a ``CheckpointError`` naming them all. A checkpoint made
    with other settings is never skipped: it is an ``InputError`` (the user's settings differ)."""
    from remind.checkpoint import CheckpointError, checkpoint_versions

    path = os.fspath(path)
    candidates = [path] + ([v for v in checkpoint_versions(path) if v != path] if fallback else [])
    refused = []
    for candidate in candidates:
        try:
            ckpt = _load_run_checkpoint_file(candidate, kind, map_location)
        except CheckpointError as err:
            refused.append(err)
            continue
        _check_run_fingerprint(candidate, ckpt, run_fingerprint)
        if refused:
            print(f"warning: refused {'; '.join(map(str, refused))}; falling back to {candidate}",
                  file=sys.stderr, flush=True)
        return (ckpt, candidate) if return_path else ckpt
    if len(refused) == 1:
        raise refused[0]
    raise CheckpointError(f"{path}: no usable checkpoint among {len(refused)} versions: "
                          + "; ".join(map(str, refused)))


def _load_run_checkpoint_file(path, kind, map_location):
    """One file: readable, of ``kind``, and of a format this code reads (else CheckpointError)."""
    from remind.checkpoint import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(path, map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != kind:
        raise CheckpointError(f"{path}: not a {kind} checkpoint")
    version = ckpt.get("format_version", RUN_CHECKPOINT_VERSION)
    if version > RUN_CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} is newer than this code's "
                              f"({RUN_CHECKPOINT_VERSION}); update the code")
    return ckpt


def _check_run_fingerprint(path, ckpt, run_fingerprint):
    if run_fingerprint is not None:
        diff = fingerprint_diff(ckpt.get("fingerprint"), run_fingerprint)
        if diff is not None:
            raise InputError(f"{path}: made with other settings ({diff}); use the original settings "
                             "or another --save_dir")
