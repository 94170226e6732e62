"""Kill tests: start a script, SIGKILL it at a chosen point, resume it until it finishes, and
compare what it wrote with an uninterrupted run's outputs. For every long-running script.

The points (``KillPoint``) use the test-only hook of ``remind.checkpoint`` (``REMIND_FAULT_INJECT``,
see its docstring) or the script's own output:

- ``KillPoint.in_write(n, glob)``: the process kills itself in the middle of its n-th atomic write
  of a file matching ``glob`` (``kill:n:glob``: the temporary file is half written).
- ``KillPoint.paused_write(n, glob)``: the n-th such write pauses with its temporary file complete
  but not yet renamed (``pause:n:glob``); the test sends SIGKILL then.
- ``KillPoint.after_output(pattern, delay)``: SIGKILL ``delay`` seconds after the first output
  line matching the regular expression ``pattern`` (e.g. mid-step or mid-epoch).

Functions:

- ``script_command(path, *args)``: ``[sys.executable, path, *args]`` (arguments as strings).
- ``start(cmd, fault=None, env=None, cwd=None)``: a ``Running`` process (stdout and stderr merged
  and read line by line by a thread), one CPU thread, unbuffered output.
- ``kill_at(cmd, point, ...)``: run ``cmd`` until ``point`` and kill it there; returns its output.
  Fails the test when the process ends before the point is reached.
- ``run_to_end(cmd, ...)``: run ``cmd`` to its end; fails the test on a non-zero exit status.
- ``interrupt_and_resume(make_cmd, points, ...)``: ``make_cmd(i)`` is the command of the i-th
  process (a resume from the second on, however the script spells that); kill the first
  ``len(points)`` processes at their points, then run one more to the end. Returns every output.
- ``assert_same_files(dir_a, dir_b, names)``: byte-identical files (names relative to the dirs;
  shell patterns are expanded in ``dir_a`` and must match the same names in ``dir_b``).
- ``assert_same_tensors(a, b, what)``: nested dicts/lists of tensors and plain values are equal.
- ``assert_no_temp_files(folder)``: no temporary file of an atomic write is left anywhere below.
"""
import fnmatch
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import torch

FAULT_ENV = "REMIND_FAULT_INJECT"
PAUSE_ENV = "REMIND_FAULT_PAUSE_S"
PAUSED_LINE = re.escape(f"{FAULT_ENV}: paused writing")
DEFAULT_TIMEOUT = 120.0


class KillPoint:
    """Where to kill a process: a fault-injection spec and/or an output line to wait for."""

    def __init__(self, name, fault=None, wait_for=None, delay=0.0, self_kill=False):
        self.name, self.fault, self.wait_for, self.delay, self.self_kill = name, fault, wait_for, delay, self_kill

    @classmethod
    def in_write(cls, n, glob="*"):
        return cls(f"in write {n} of {glob}", fault=f"kill:{n}:{glob}", self_kill=True)

    @classmethod
    def paused_write(cls, n, glob="*"):
        return cls(f"paused in write {n} of {glob}", fault=f"pause:{n}:{glob}", wait_for=PAUSED_LINE)

    @classmethod
    def after_output(cls, pattern, delay=0.0):
        return cls(f"{delay} s after output {pattern!r}", wait_for=pattern, delay=delay)

    def __repr__(self):
        return f"KillPoint({self.name})"


class Running:
    """A started process whose merged output is collected by a reader thread."""

    def __init__(self, proc):
        self.proc, self.lines, self._queue = proc, [], queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self):
        self._drain()
        return "".join(self.lines)

    def _drain(self):
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.lines.append(line)

    def wait_for(self, pattern, timeout=DEFAULT_TIMEOUT):
        """The first output line (from now on, or already seen) matching ``pattern``."""
        regex = re.compile(pattern)
        for line in self.lines:
            if regex.search(line):
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the process ended (status {self.proc.wait()}) before printing "
                                     f"{pattern!r}; its output:\n{self.output}")
            self.lines.append(line)
            if regex.search(line):
                return line
        self.kill()
        raise AssertionError(f"no output matching {pattern!r} within {timeout} s; output:\n{self.output}")

    def kill(self):
        """SIGKILL (if still running) and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        rc = self.proc.wait()
        self._reader.join(timeout=10)
        self._drain()
        return rc

    def finish(self, timeout=DEFAULT_TIMEOUT):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout} s; output:\n{self.output}") from None
        self._reader.join(timeout=10)
        self._drain()
        return rc


def script_command(path, *args):
    return [sys.executable, os.fspath(path), *(os.fspath(a) if isinstance(a, os.PathLike) else str(a)
                                               for a in args)]


def start(cmd, fault=None, env=None, cwd=None, pause_s=DEFAULT_TIMEOUT):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop(FAULT_ENV, None)
    if fault:
        full_env[FAULT_ENV] = fault
        full_env[PAUSE_ENV] = str(pause_s)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=full_env, cwd=cwd)
    return Running(proc)


def kill_at(cmd, point, env=None, cwd=None, timeout=DEFAULT_TIMEOUT):
    """Run ``cmd`` until ``point``, kill it there; returns its output."""
    run = start(cmd, fault=point.fault, env=env, cwd=cwd)
    if point.self_kill:
        rc = run.finish(timeout)
        assert rc == -signal.SIGKILL, f"{point}: expected the process to kill itself, exit status {rc}:\n{run.output}"
        return run.output
    run.wait_for(point.wait_for, timeout)
    if point.delay:
        time.sleep(point.delay)
    if run.proc.poll() is not None:
        raise AssertionError(f"{point}: the process ended (status {run.proc.returncode}) before the kill; "
                             f"output:\n{run.output}")
    run.kill()
    return run.output


def run_to_end(cmd, env=None, cwd=None, timeout=DEFAULT_TIMEOUT):
    run = start(cmd, env=env, cwd=cwd)
    rc = run.finish(timeout)
    assert rc == 0, f"exit status {rc}; output:\n{run.output}"
    return run.output


def interrupt_and_resume(make_cmd, points, env=None, cwd=None, timeout=DEFAULT_TIMEOUT):
    """Kill process i at ``points[i]``, then run one more to the end; returns every output."""
    outputs = [kill_at(make_cmd(i), point, env=env, cwd=cwd, timeout=timeout) for i, point in enumerate(points)]
    outputs.append(run_to_end(make_cmd(len(points)), env=env, cwd=cwd, timeout=timeout))
    return outputs


# ------------------------------------------------------------------------------ comparisons
def _expand(folder, names):
    found = []
    for name in names:
        if any(c in name for c in "*?["):
            sub, pattern = os.path.split(name)
            where = os.path.join(folder, sub)
            matches = sorted(n for n in os.listdir(where) if fnmatch.fnmatch(n, pattern)) if os.path.isdir(where) else []
            assert matches, f"no file matches {name} in {folder}"
            found += [os.path.join(sub, m) for m in matches]
        else:
            found.append(name)
    return found


def assert_same_files(dir_a, dir_b, names):
    """The files ``names`` (shell patterns expanded in ``dir_a``) are byte-identical in both."""
    for name in _expand(os.fspath(dir_a), names):
        a, b = os.path.join(dir_a, name), os.path.join(dir_b, name)
        assert os.path.isfile(b), f"{name}: missing in {dir_b}"
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), f"{name} differs between {dir_a} and {dir_b}"
    for name in names:  # no extra files of a pattern in dir_b
        if any(c in name for c in "*?["):
            assert _expand(os.fspath(dir_b), [name]) == _expand(os.fspath(dir_a), [name]), name


def assert_same_tensors(a, b, what="value"):
    """Nested dicts/lists/tuples of tensors and plain values are equal (tensors exactly)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), what
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{what}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            assert_same_tensors(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{what}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{what}[{i}]")
    else:
        assert a == b, f"{what}: {a!r} vs {b!r}"


def assert_no_temp_files(folder):
    """No ``.<name>.<pid>-<random>.tmp<ext>`` file of an atomic write anywhere below ``folder``."""
    left = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names
            if n.startswith(".") and ".tmp" in n]
    assert not left, f"temporary files left: {left}"
