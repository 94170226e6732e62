"""Atomic, verified, code-free checkpoints and output files.

Writing (``atomic_write``): a crash while writing must never leave a truncated file under the
final name, so every write goes to a temporary file ``.<name>.<pid>-<random>.tmp<ext>`` in the
same folder, is flushed to disk, and is renamed over the target. The temporary file is removed
when the write fails; one left by a killed process (its pid is gone) is removed by the next write
to the same target, and it never carries the final name, so readers never see it.

Rotation (``keep=K``): the K newest versions stay on disk, the newest under the given name and
older ones beside it with a number: ``latest.pt``, ``latest.1.pt``, ..., ``latest.<K-1>.pt``.
Each older version is made by hard-linking (a copy where links are not supported) the next newer
one and renaming the link over it; the new file is renamed over the newest last. So at every
moment the newest name holds a complete file.

Full disk: ``ENOSPC`` (or ``EDQUOT``) anywhere in a write becomes a ``DiskFullError``, an
``InputError`` with one line, ``<path>: no space left on device while saving; the previous
checkpoint is intact``: the temporary file is removed and the target is untouched.

Reading (``load_checkpoint``): ``torch.load(weights_only=True)``, so a checkpoint is data and can
never run code. ``torch.load`` checks no CRC (a flipped bit in tensor data loads silently), so
every record of the zip archive ``torch.save`` writes is first read against its CRC-32: a
truncated or damaged file is refused with a ``CheckpointError`` naming it and why. (Records saved
with torch's CRC option turned off store a CRC of 0: those are read, not checked.)

Fault injection, for tests only: the environment variable ``REMIND_FAULT_INJECT`` holds one or
more comma-separated ``ACTION:N[:GLOB]``. The N-th ``atomic_write`` of this process (counted from
1) whose target's file name matches the shell pattern GLOB (default ``*``), once its writer has
finished and before the rename:

- ``enospc:N``  truncates the temporary file to half its size and raises ``OSError(ENOSPC)``
  (so it ends as the ``DiskFullError`` above, exactly like a disk that filled up mid-write);
- ``kill:N``    truncates the temporary file to half its size and sends SIGKILL to the process
  itself (a crash mid-write: the half-written temporary file stays behind);
- ``pause:N``   prints ``REMIND_FAULT_INJECT: paused writing <path> (pid <pid>)`` on stderr and
  sleeps ``REMIND_FAULT_PAUSE_S`` seconds (default 60) with the complete temporary file not yet
  renamed, so a test can kill the process from outside mid-write; then the write completes.

Example: ``REMIND_FAULT_INJECT=kill:2:latest.pt`` kills the process in its second write of
``latest.pt``. The counts restart whenever the variable's value changes.
"""
import contextlib
import errno
import fnmatch
import glob
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import zipfile
import zlib

import numpy as np
import torch
from remind.errors import InputError

FAULT_ENV = "REMIND_FAULT_INJECT"
FAULT_PAUSE_ENV = "REMIND_FAULT_PAUSE_S"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(InputError, RuntimeError):
    """A checkpoint is missing, unreadable or not of the expected kind."""


class DiskFullError(InputError):
    """The disk (or quota) filled up while saving; the previous file is intact."""


# -------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_write(path, keep=1, what="file"):
    """Yield a temporary path beside ``path`` (same extension, so writers that go by the name,
    such as numpy or h5py, behave); on success fsync it, rotate the older versions (``keep`` > 1,
    see the module docstring) and rename it to ``path``. ``what`` names the file in errors."""
    path = os.fspath(path)
    keep = int(keep)
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    _remove_stale_temps(folder, base, ext)
    existed, tmp = os.path.exists(path), None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.{os.getpid()}-", suffix=f".tmp{ext}", dir=folder)
        os.close(fd)
        yield tmp
        _inject_fault(path, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make every output private
        if keep > 1:
            _rotate(path, keep)
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            kept = f"the previous {what} is intact" if existed else "nothing was written"
            raise DiskFullError(f"{path}: {os.strerror(err.errno).lower()} while saving; {kept}") from None
        raise


def version_path(path, index):
    """The name of the ``index``-th older version of ``path`` (0: ``path`` itself)."""
    if index == 0:
        return os.fspath(path)
    base, ext = os.path.splitext(os.fspath(path))
    return f"{base}.{index}{ext}"


def checkpoint_versions(path):
    """``path`` and its numbered older versions that exist on disk, newest first."""
    path = os.fspath(path)
    return ([path] if os.path.exists(path) else []) + [name for _, name in _numbered_versions(path)]


def _numbered_versions(path):
    """(index, name) of the numbered versions of ``path`` on disk, by index."""
    base, ext = os.path.splitext(path)
    pattern = re.compile(re.escape(os.path.basename(base)) + r"\.([1-9][0-9]*)" + re.escape(ext) + "$")
    found = []
    for name in glob.glob(glob.escape(base) + ".*" + glob.escape(ext)):
        m = pattern.match(os.path.basename(name))
        if m:
            found.append((int(m.group(1)), name))
    return sorted(found)


def _rotate(path, keep):
    """Shift ``path`` -> ``.1`` -> ... -> ``.<keep-1>`` (dropping older ones); ``path`` stays."""
    for index, name in _numbered_versions(path):
        if index >= keep:
            os.remove(name)
    for i in range(keep - 1, 0, -1):
        src = version_path(path, i - 1)
        if os.path.exists(src):
            _link_over(src, version_path(path, i))


def _link_over(src, dst):
    """Make ``dst`` the same file as ``src`` atomically (hard link, or a copy where unsupported)."""
    folder = os.path.dirname(os.path.abspath(dst))
    base, ext = os.path.splitext(os.path.basename(dst))
    tmp = os.path.join(folder, f".{base}.{os.getpid()}-{secrets.token_hex(4)}.tmp{ext}")
    try:
        try:
            os.link(src, tmp)
        except OSError as err:
            if err.errno in _DISK_FULL:
                raise
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _remove_stale_temps(folder, base, ext):
    """Remove temporary files of ``base`` (and its numbered versions) left by dead processes."""
    pattern = re.compile(re.escape(f".{base}.") + r"(?:[0-9]+\.)?([0-9]+)-[^./]+" + re.escape(f".tmp{ext}") + "$")
    for name in glob.glob(os.path.join(glob.escape(folder), glob.escape(f".{base}.") + "*")):
        m = pattern.match(os.path.basename(name))
        if m and int(m.group(1)) != os.getpid() and not _process_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.remove(name)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _fsync_folder(folder):
    """Make the rename itself durable (a power cut must not undo it); best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------ fault injection
_fault_state = {"env": None, "specs": [], "counts": []}


def _fault_specs():
    value = os.environ.get(FAULT_ENV, "")
    if value != _fault_state["env"]:
        specs = []
        for item in filter(None, (s.strip() for s in value.split(","))):
            parts = item.split(":", 2)
            if len(parts) < 2 or parts[0] not in ("enospc", "kill", "pause") or not parts[1].isdigit():
                raise InputError(f"{FAULT_ENV}={value!r}: expected ACTION:N[:GLOB] with ACTION enospc, "
                                 "kill or pause")
            specs.append((parts[0], int(parts[1]), parts[2] if len(parts) == 3 else "*"))
        _fault_state.update(env=value, specs=specs, counts=[0] * len(specs))
    return _fault_state["specs"]


def _inject_fault(path, tmp):
    """Act on ``REMIND_FAULT_INJECT`` (see the module docstring); nothing when it is unset."""
    specs = _fault_specs()
    for i, (action, n, pattern) in enumerate(specs):
        if not fnmatch.fnmatch(os.path.basename(path), pattern):
            continue
        _fault_state["counts"][i] += 1
        if _fault_state["counts"][i] != n:
            continue
        if action == "pause":
            print(f"{FAULT_ENV}: paused writing {path} (pid {os.getpid()})", file=sys.stderr, flush=True)
            time.sleep(float(os.environ.get(FAULT_PAUSE_ENV, "60")))
            continue
        with open(tmp, "rb+") as f:
            f.truncate(os.path.getsize(tmp) // 2)
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({FAULT_ENV})", tmp)


# ------------------------------------------------------------------------ save and load
def _to_safe(obj):
    """numpy arrays and scalars -> tensors / Python scalars, recursively (weights_only-loadable)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_safe(v) for v in obj)
    return obj


def save_checkpoint(path, obj, keep=1):
    """Save atomically; ``keep`` > 1 keeps that many versions (see the module docstring)."""
    with atomic_write(path, keep=keep, what="checkpoint") as tmp:
        with open(tmp, "wb") as f:  # a Python file, so a full disk surfaces as OSError(ENOSPC)
            torch.save(_to_safe(obj), f)


def verify_checkpoint(path):
    """Read every record of a zip-format checkpoint against its CRC-32; raise if any fails.
    (Records saved with torch's CRC option off store 0 and cannot be checked: they are read only.)"""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path}: not a readable checkpoint (empty file)")
    if head != _ZIP_MAGIC:
        return  # not torch's zip format: torch.load decides
    try:
        with zipfile.ZipFile(path) as z, open(path, "rb") as raw:
            for info in z.infolist():
                _check_record(z, raw, info)
    except zipfile.BadZipFile as err:
        why = "no zip directory at its end" if "not a zip file" in str(err) else str(err)
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged: {why})") from None
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or damaged: "
                              f"{_one_line(err)})") from None


def _check_record(z, raw, info, chunk=1 << 24):
    if info.compress_type != zipfile.ZIP_STORED:  # not torch's: zipfile checks the CRC itself
        with z.open(info) as member:
            while member.read(chunk):
                pass
        return
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) < 30 or header[:4] != _ZIP_MAGIC:
        raise zipfile.BadZipFile(f"bad header of record {info.filename!r}")
    raw.seek(int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little"), os.SEEK_CUR)
    crc, left = 0, info.compress_size
    while left:
        data = raw.read(min(chunk, left))
        if not data:
            raise zipfile.BadZipFile(f"record {info.filename!r} is cut short")
        crc, left = zlib.crc32(data, crc), left - len(data)
    if info.CRC and crc != info.CRC:
        raise zipfile.BadZipFile(f"record {info.filename!r} fails its CRC-32 check")


def load_checkpoint(path, map_location="cpu"):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    verify_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a corrupt or foreign file: say which, in one line
        raise CheckpointError(f"{path}: not a readable checkpoint ({_one_line(err)})") from None


def _one_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
