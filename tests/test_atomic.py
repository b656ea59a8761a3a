"""The output rules: nothing a user owns is lost, exactly one racer wins, names that fit."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from owlvit_cli.atomic import (
    atomic_directory,
    atomic_write_bytes,
    check_output_dir,
    check_writable_file,
)
from owlvit_cli.errors import BadInputError, OutputError
from owlvit_cli.model.model_dir import RECORD_FILE, TOOL_NAME


def _fill(directory: Path, record: bool = True) -> None:
    (directory / "model.safetensors").write_bytes(b"x")
    if record:
        (directory / RECORD_FILE).write_text(json.dumps({"tool": TOOL_NAME}))


def _write(out: Path, **rules: object) -> None:
    with atomic_directory(out, **rules) as tmp:
        _fill(tmp)


def test_overwrite_never_deletes_a_directory_holding_the_input(tmp_path: Path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    ckpt = downloads / "ckpt"
    ckpt.write_bytes(b"weights")
    (downloads / "photo.jpg").write_bytes(b"mine")
    for out in (downloads, ckpt, tmp_path):
        for rules in ({"overwrite": True}, {"force": True}):
            with pytest.raises(BadInputError, match="input"):
                _write(out, inputs=[ckpt], **rules)
    assert sorted(p.name for p in downloads.iterdir()) == ["ckpt", "photo.jpg"]
    assert ckpt.read_bytes() == b"weights"


def test_output_inside_an_input_directory_is_refused(tmp_path: Path):
    hf_dir = tmp_path / "model"
    hf_dir.mkdir()
    with pytest.raises(BadInputError, match="input"):
        check_output_dir(hf_dir / "sub", False, inputs=[hf_dir])


def _owned_if_recorded(directory: Path) -> str | None:
    """A stand-in for the caller's proof: here, a record naming the tool."""
    try:
        return None if json.loads((directory / RECORD_FILE).read_text())["tool"] else "no"
    except (OSError, ValueError, KeyError, TypeError):
        return "it has no record"


def test_overwrite_replaces_only_what_the_caller_vouches_for_unless_forced(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="left alone: it has no record") as caught:
        _write(out, overwrite=True, replaceable=_owned_if_recorded)
    assert "--force-overwrite" in caught.value.hint and "--" not in str(caught.value)
    with pytest.raises(BadInputError, match="nothing vouches") as refused:  # no check: never
        _write(out, overwrite=True)
    assert "--" not in str(refused.value) and "--force-overwrite" in refused.value.hint
    assert (out / "notes.txt").read_text() == "mine"
    _write(out, force=True)
    assert not (out / "notes.txt").exists()
    (out / "model.safetensors").write_bytes(b"old")
    _write(out, overwrite=True, replaceable=_owned_if_recorded)  # vouched for: replaced
    assert (out / "model.safetensors").read_bytes() == b"x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_file_added_while_the_run_worked_is_kept(tmp_path: Path):
    """The directory is checked again once moved aside: what arrived since is the user's."""
    out = tmp_path / "out"
    _write(out)
    checks: list[Path] = []

    def vouch_once(directory: Path) -> str | None:
        checks.append(directory)
        if len(checks) == 2:  # the check just before OUT is moved aside
            (out / "EVAL.md").write_text("added meanwhile")
            return None
        return None if not (directory / "EVAL.md").exists() else "it holds EVAL.md"

    with pytest.raises(BadInputError, match=r"holds EVAL\.md"):
        _write(out, overwrite=True, replaceable=vouch_once)
    assert (out / "EVAL.md").read_text() == "added meanwhile" and len(checks) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_symlinked_output_is_written_where_it_points(tmp_path: Path):
    real = tmp_path / "elsewhere" / "model"
    real.parent.mkdir()
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    _write(link)
    assert link.is_symlink() and (real / RECORD_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "link"]
    assert [p.name for p in real.parent.iterdir()] == ["model"]


def test_current_home_and_mount_point_directories_are_refused_whatever_the_flags(
    tmp_path: Path, monkeypatch
):
    home, work = tmp_path / "home", tmp_path / "home" / "work"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for out in (Path("."), work, Path(".."), home, tmp_path):
        with pytest.raises(BadInputError, match="current directory or the home directory"):
            check_output_dir(out, True, force=True)
    with pytest.raises(BadInputError, match="mount point"):
        check_output_dir(Path("/proc"), True, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_of_two_racing_writers_exactly_one_wins(tmp_path: Path):
    out = tmp_path / "out"
    both_inside = threading.Barrier(2)
    outcomes: list[str] = []

    def writer(tag: str) -> None:
        try:
            with atomic_directory(out) as tmp:
                (tmp / RECORD_FILE).write_text(tag)
                both_inside.wait(timeout=30)  # both checked OUT as absent; both finished
            outcomes.append(f"won {tag}")
        except BadInputError as exc:
            assert "filled by someone else" in str(exc)
            outcomes.append("refused")

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes)[0] == "refused" and len(outcomes) == 2, outcomes
    winner = outcomes[0] if outcomes[0] != "refused" else outcomes[1]
    assert (out / RECORD_FILE).read_text() == winner[-1]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_missing_parents_are_created_and_removed_again_on_failure(tmp_path: Path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError), atomic_directory(out):
        raise RuntimeError("conversion failed")
    assert list(tmp_path.iterdir()) == []
    _write(out)
    assert (out / RECORD_FILE).exists()


def test_parents_that_existed_are_kept_on_failure(tmp_path: Path):
    (tmp_path / "a").mkdir()
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "a" / "b" / "out"):
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["a"] and not any((tmp_path / "a").iterdir())


@pytest.mark.parametrize("length", [240, 250, 255])
def test_long_names_that_mkdir_accepts_work(tmp_path: Path, length: int):
    out = tmp_path / ("n" * length)
    _write(out)
    atomic_write_bytes(tmp_path / ("f" * length), b"data")
    assert (out / RECORD_FILE).exists() and (tmp_path / ("f" * length)).read_bytes() == b"data"


def test_too_long_names_are_one_clear_error(tmp_path: Path):
    with pytest.raises(BadInputError, match="longer than 255 bytes"):
        check_output_dir(tmp_path / ("n" * 256), False)
    with pytest.raises(BadInputError, match="longer than 255 bytes"):
        check_writable_file(tmp_path / ("é" * 128))


def test_non_utf8_names_work(tmp_path: Path):
    out = tmp_path / os.fsdecode(b"mod\xffel")
    _write(out)
    assert (out / RECORD_FILE).exists()


def test_unwritable_file_outputs_are_refused_up_front(tmp_path: Path):
    with pytest.raises(OutputError, match="no such directory"):
        check_writable_file(tmp_path / "missing" / "out.npz")
    with pytest.raises(OutputError, match="is a directory"):
        check_writable_file(tmp_path)
    check_writable_file(tmp_path / "fine.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def ending(monkeypatch: pytest.MonkeyPatch):
    """`remove_temporaries` as the console script calls it when a signal ends the process,
    with the module's state put back afterwards (this process goes on)."""
    from owlvit_cli import atomic

    monkeypatch.setattr(atomic._Temporaries, "ending", False)
    monkeypatch.setattr(atomic._Temporaries, "undo", {})
    return atomic.remove_temporaries


def _in_a_thread(work) -> tuple[threading.Thread, threading.Event]:
    """Run `work(ready)` in a daemon thread (left parked if the ending stops it) and wait
    until it sets `ready`."""
    ready = threading.Event()
    thread = threading.Thread(target=work, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(30)
    return thread, ready


def test_an_ending_removes_temporary_outputs_and_their_parents(tmp_path: Path, ending):
    """While a command's thread writes into its temporary directory, another thread ends the
    run: the directory and the parents made for it go, and the command never renames."""
    out = tmp_path / "new" / "model"
    go_on = threading.Event()

    def work(ready: threading.Event) -> None:
        with atomic_directory(out) as tmp:
            _fill(tmp)
            ready.set()
            go_on.wait()

    thread, _ = _in_a_thread(work)
    assert len(list((tmp_path / "new").iterdir())) == 1
    ending()
    assert list(tmp_path.iterdir()) == []
    go_on.set()
    thread.join(0.5)
    assert thread.is_alive() and list(tmp_path.iterdir()) == []  # parked, nothing renamed


def test_an_ending_removes_a_temporary_file(tmp_path: Path, ending, monkeypatch):
    from owlvit_cli import atomic

    go_on = threading.Event()
    real_chmod = os.chmod

    def slow_chmod(path, mode):  # between the write and the rename
        real_chmod(path, mode)
        if atomic.TMP_MARK in str(path):
            ready.set()
            go_on.wait()

    monkeypatch.setattr(atomic.os, "chmod", slow_chmod)
    ready = threading.Event()
    thread = threading.Thread(
        target=atomic_write_bytes, args=(tmp_path / "report.json", b"{}"), daemon=True
    )
    thread.start()
    assert ready.wait(30) and len(list(tmp_path.iterdir())) == 1
    ending()
    go_on.set()
    thread.join(0.5)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_a_file_output_is_an_output_error(tmp_path: Path):
    """What the filesystem refuses is one `OutputError` naming the file, and no partial file."""
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                           capture_output=True, check=False)  # fmt: skip
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with pytest.raises(OutputError, match=r"out\.npz: cannot write \(No space left on device"):
            atomic_write_bytes(small / "out.npz", b"x" * 200_000)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)
