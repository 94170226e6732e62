"""Run checkpoints survive bad disks and crashes: keep-K rotation, fallback to the previous good
version, CRC-checked loads, a full disk as a one-line error, and SIGKILL in the middle of a write
(made deterministic by the REMIND_FAULT_INJECT hook of remind.checkpoint)."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from remind.checkpoint import (FAULT_ENV, FAULT_PAUSE_ENV, CheckpointError, DiskFullError, atomic_write,
                               load_checkpoint, save_checkpoint)
from remind.errors import InputError
from remind.runtime import load_run_checkpoint, run_cli, save_run_checkpoint, write_json

FP = {"lr": 0.1, "classes": 10}


def _save(path, step, keep=2, kind="stream"):
    save_run_checkpoint(path, kind, FP, {"step": step, "w": torch.full((1000,), float(step))}, keep=keep)


def _files(folder):
    return sorted(os.listdir(folder))


@pytest.fixture(autouse=True)
def _no_fault_injection(monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)


# --------------------------------------------------------------------------------- rotation
def test_rotation_keeps_the_last_k(tmp_path):
    path = tmp_path / "latest.pt"
    for step in range(4):
        _save(path, step)
    assert _files(tmp_path) == ["latest.1.pt", "latest.pt"]
    assert [load_checkpoint(tmp_path / n)["step"] for n in ("latest.pt", "latest.1.pt")] == [3, 2]
    for step in range(4, 7):
        _save(path, step, keep=3)
    assert [load_checkpoint(tmp_path / n)["step"] for n in ("latest.pt", "latest.1.pt", "latest.2.pt")] == [6, 5, 4]
    _save(path, 7, keep=2)  # a smaller keep drops the older versions
    assert _files(tmp_path) == ["latest.1.pt", "latest.pt"]
    save_checkpoint(tmp_path / "plain.pt", {"v": 1})
    save_checkpoint(tmp_path / "plain.pt", {"v": 2})  # keep=1: no versions beside it
    assert "plain.1.pt" not in _files(tmp_path)


def test_the_newest_file_is_complete_at_every_moment_of_a_rotation(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    _save(path, 0)
    _save(path, 1)
    seen, real_replace = [], os.replace

    def checking_replace(src, dst):
        seen.append(load_checkpoint(path)["step"])  # refuses a missing or partial file
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", checking_replace)
    _save(path, 2, keep=3)
    assert seen and set(seen) == {1}
    monkeypatch.undo()
    assert [load_checkpoint(tmp_path / n)["step"] for n in ("latest.pt", "latest.1.pt", "latest.2.pt")] == [2, 1, 0]


# --------------------------------------------------------------------------------- fallback
def test_a_truncated_newest_falls_back_with_a_one_line_warning(tmp_path, capsys):
    path = tmp_path / "latest.pt"
    _save(path, 1)
    _save(path, 2)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    ckpt, used = load_run_checkpoint(path, "stream", FP, return_path=True)
    assert ckpt["step"] == 1 and used == str(tmp_path / "latest.1.pt")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "latest.pt" in err and "truncated or damaged" in err
    assert "falling back to" in err and "latest.1.pt" in err


def test_a_bit_flip_in_tensor_data_is_caught_by_the_crc_check(tmp_path, capsys):
    path = tmp_path / "latest.pt"
    _save(path, 1)
    _save(path, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the 4000-byte tensor: torch.load alone would not notice
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(path, weights_only=True)["w"], torch.full((1000,), 2.0))
    with pytest.raises(CheckpointError, match="latest.pt: not a readable checkpoint .*CRC"):
        load_checkpoint(path)
    assert load_run_checkpoint(path, "stream", FP)["step"] == 1
    assert "CRC" in capsys.readouterr().err


def test_a_file_saved_without_crcs_still_loads(tmp_path):
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.arange(5)}, tmp_path / "nocrc.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    assert torch.equal(load_checkpoint(tmp_path / "nocrc.pt")["w"], torch.arange(5))


@pytest.mark.parametrize("foreign", ["other_kind", "text", "empty", "missing"])
def test_a_foreign_newest_falls_back_and_alone_is_refused(tmp_path, capsys, foreign):
    path = tmp_path / "latest.pt"
    _save(path, 1)
    _save(path, 2)
    if foreign == "other_kind":
        save_checkpoint(path, {"format": "vqa", "format_version": 1, "fingerprint": FP})
    elif foreign == "text":
        path.write_text("not a checkpoint\n")
    elif foreign == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    assert load_run_checkpoint(path, "stream", FP)["step"] == 1
    assert "latest.pt" in capsys.readouterr().err
    (tmp_path / "latest.1.pt").unlink()
    with pytest.raises(CheckpointError, match="latest.pt: (not a|checkpoint file not found)"):
        load_run_checkpoint(path, "stream", FP)
    if foreign != "missing":
        with pytest.raises(CheckpointError):
            load_run_checkpoint(path, "stream", FP, fallback=False)


def test_no_good_version_names_every_file(tmp_path):
    path = tmp_path / "latest.pt"
    _save(path, 1)
    _save(path, 2)
    for name in ("latest.pt", "latest.1.pt"):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        load_run_checkpoint(path, "stream", FP)
    msg = str(info.value)
    assert "\n" not in msg and "no usable checkpoint among 2 versions" in msg
    assert str(tmp_path / "latest.pt") in msg and str(tmp_path / "latest.1.pt") in msg


def test_other_settings_are_an_input_error_not_a_fallback(tmp_path, capsys):
    path = tmp_path / "latest.pt"
    _save(path, 1)
    _save(path, 2)
    with pytest.raises(InputError, match=r"latest.pt: made with other settings \(lr: 0.1 vs 0.2\)") as info:
        load_run_checkpoint(path, "stream", {**FP, "lr": 0.2})
    assert not isinstance(info.value, CheckpointError)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------- full disk
def test_a_full_disk_keeps_the_previous_checkpoint_and_is_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "latest.pt"
    _save(path, 1)
    _save(path, 2)
    monkeypatch.setenv(FAULT_ENV, "enospc:1")
    with pytest.raises(DiskFullError) as info:
        _save(path, 3)
    assert str(info.value) == f"{path}: no space left on device while saving; the previous checkpoint is intact"
    assert isinstance(info.value, InputError)
    assert _files(tmp_path) == ["latest.1.pt", "latest.pt"]  # no temporary file, no rotation
    assert load_run_checkpoint(path, "stream", FP)["step"] == 2
    assert load_checkpoint(tmp_path / "latest.1.pt")["step"] == 1

    def main(argv):
        _save(path, 4)

    monkeypatch.setenv(FAULT_ENV, "enospc:1:latest.pt")
    with pytest.raises(SystemExit) as ex:
        run_cli(main, [], prog="stream")
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert err == f"stream: error: {path}: no space left on device while saving; the previous checkpoint is intact\n"


def test_full_disk_filters_by_file_name_and_counts_writes(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "enospc:2:results.json")
    write_json(tmp_path / "results.json", {"v": 1})
    _save(tmp_path / "latest.pt", 1)  # another name: not counted
    with pytest.raises(DiskFullError, match="results.json: no space left on device while saving; the previous file is intact"):
        write_json(tmp_path / "results.json", {"v": 2})
    write_json(tmp_path / "results.json", {"v": 3})  # only the 2nd write fails
    assert (tmp_path / "results.json").read_text() == '{\n  "v": 3\n}\n'
    monkeypatch.setenv(FAULT_ENV, "enospc:1")
    with pytest.raises(DiskFullError, match="new.pt: no space left on device while saving; nothing was written"):
        save_checkpoint(tmp_path / "new.pt", {"v": 1})
    assert _files(tmp_path) == ["latest.pt", "results.json"]
    monkeypatch.setenv(FAULT_ENV, "explode:1")
    with pytest.raises(InputError, match="REMIND_FAULT_INJECT"):
        save_checkpoint(tmp_path / "new.pt", {"v": 1})


def test_a_writer_hitting_a_full_disk_gets_the_same_one_line_error(tmp_path):
    write_json(tmp_path / "out.json", {"v": 1})
    with pytest.raises(DiskFullError, match="out.json: no space left on device while saving; the previous file is intact"):
        with atomic_write(tmp_path / "out.json") as tmp:
            with open(tmp, "w") as f:
                f.write("{")
            raise OSError(28, "No space left on device")
    assert _files(tmp_path) == ["out.json"] and (tmp_path / "out.json").read_text() == '{\n  "v": 1\n}\n'


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_torch_save_into_a_python_file_reports_enospc_as_oserror():
    """save_checkpoint writes through a Python file so a real full disk arrives as ENOSPC."""
    with pytest.raises(OSError) as info:
        with open("/dev/full", "wb") as f:
            torch.save({"w": torch.zeros(100_000)}, f)
    assert info.value.errno == 28


# --------------------------------------------------------------------------------- SIGKILL
_SAVER = textwrap.dedent("""
    import sys, torch
    from remind.runtime import save_run_checkpoint
    for step in range(int(sys.argv[2])):
        save_run_checkpoint(sys.argv[1], "stream", {"lr": 0.1, "classes": 10},
                            {"step": step, "w": torch.full((1000,), float(step))})
""")


def _run_saver(path, saves, fault, **popen):
    env = {**os.environ, FAULT_ENV: fault, FAULT_PAUSE_ENV: "60"}
    return subprocess.Popen([sys.executable, "-c", _SAVER, str(path), str(saves)], env=env, **popen)


def test_sigkill_mid_write_leaves_the_previous_checkpoint(tmp_path):
    path, killed_save = tmp_path / "latest.pt", 2
    proc = _run_saver(path, 5, f"kill:{killed_save}")
    assert proc.wait(timeout=60) == -signal.SIGKILL
    stale = [n for n in _files(tmp_path) if n.startswith(".latest.")]
    assert len(stale) == 1 and stale[0].endswith(".tmp.pt")  # the half-written temporary file
    assert load_run_checkpoint(path, "stream", FP)["step"] == killed_save - 2
    _save(path, 99)  # the next save removes the dead process's temporary file
    assert _files(tmp_path) == ["latest.1.pt", "latest.pt"]
    assert load_checkpoint(tmp_path / "latest.1.pt")["step"] == killed_save - 2


def test_a_pause_mid_write_lets_a_test_kill_from_outside(tmp_path):
    """Killed in the 3rd save, after two complete ones: the rotation's two versions survive."""
    path = tmp_path / "latest.pt"
    proc = _run_saver(path, 4, "pause:3", stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith(f"{FAULT_ENV}: paused writing {path}")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert load_run_checkpoint(path, "stream", FP)["step"] == 1
    assert load_checkpoint(tmp_path / "latest.1.pt")["step"] == 0
    assert [n for n in _files(tmp_path) if not n.startswith(".")] == ["latest.1.pt", "latest.pt"]


def test_temporary_files_of_live_processes_are_left_alone(tmp_path):
    live = tmp_path / f".latest.{os.getppid()}-abcd1234.tmp.pt"
    dead = tmp_path / ".latest.999999999-abcd1234.tmp.pt"
    live.write_bytes(b"x")
    dead.write_bytes(b"x")
    _save(tmp_path / "latest.pt", 1)
    assert live.exists() and not dead.exists()
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "x.pt", keep=0):
            pass
