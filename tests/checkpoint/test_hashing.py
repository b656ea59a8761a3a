"""The checkpoint digest: right, remembered per file identity, never trusted after a change."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from owlvit_cli.checkpoint import hashing
from owlvit_cli.errors import BadInputError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("OWLVIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def settled(monkeypatch) -> None:
    """Files written by the test count as old enough to remember (no 3 s wait)."""
    monkeypatch.setattr(hashing, "RACY_SECONDS", 0)


@pytest.fixture(autouse=True)
def new_process(monkeypatch) -> None:
    """Each test starts with no digest remembered in memory, as a new process does."""
    later_process(monkeypatch)


def later_process(monkeypatch) -> None:
    """What a later run knows: the digests kept on disk, none from this process's memory."""
    monkeypatch.setattr(hashing, "_REMEMBERED", {})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_digest_is_remembered_until_the_file_changes(
    tmp_path: Path, cache: Path, settled, monkeypatch
):
    path = tmp_path / "ckpt"
    path.write_bytes(b"a" * 1000)
    first = hashing.start_hashing(path)
    assert isinstance(first, hashing.FileHasher) and first.digest() == sha(b"a" * 1000)
    again = hashing.start_hashing(path)
    assert isinstance(again, hashing.KnownDigest) and again.digest() == first.digest()
    later_process(monkeypatch)
    again = hashing.start_hashing(path)
    assert isinstance(again, hashing.KnownDigest) and again.digest() == first.digest()


def test_new_content_under_the_same_path_size_and_mtime_is_hashed_again(
    tmp_path: Path, cache: Path, settled
):
    """What a (path, size, mtime) identity cannot see: ctime moves with every write."""
    path = tmp_path / "ckpt"
    path.write_bytes(b"a" * 1000)
    hashing.start_hashing(path).digest()
    before = path.stat()
    with path.open("r+b") as handle:  # same inode, same size
        handle.write(b"b" * 1000)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    changed = hashing.start_hashing(path)
    assert isinstance(changed, hashing.FileHasher) and changed.digest() == sha(b"b" * 1000)


def test_a_file_changed_within_the_timestamp_tick_is_remembered_by_this_process_only(
    tmp_path: Path, cache: Path, monkeypatch
):
    """A file written less than RACY_SECONDS ago may change again without its times moving:
    its digest is not kept for later runs, only for the rest of this one (convert --verify)."""
    path = tmp_path / "ckpt"
    path.write_bytes(b"fresh")
    assert hashing.start_hashing(path).digest() == sha(b"fresh")
    assert not (cache / "sha256").exists()
    assert isinstance(hashing.start_hashing(path), hashing.KnownDigest)
    later_process(monkeypatch)
    assert isinstance(hashing.start_hashing(path), hashing.FileHasher)


def test_a_file_changed_while_hashed_is_not_remembered(tmp_path: Path, cache: Path, settled):
    path = tmp_path / "ckpt"
    path.write_bytes(b"a" * 1000)
    hasher = hashing.start_hashing(path)
    path.write_bytes(b"c" * 1000)  # whichever bytes the hash saw, they are not the file's now
    hasher.digest()
    assert not (cache / "sha256").exists() and not hashing._REMEMBERED
    assert hashing.start_hashing(path).digest() == sha(b"c" * 1000)


def test_damaged_memo_is_ignored(tmp_path: Path, cache: Path, settled, monkeypatch):
    path = tmp_path / "ckpt"
    path.write_bytes(b"data")
    hashing.start_hashing(path).digest()
    later_process(monkeypatch)
    (memo,) = (cache / "sha256").iterdir()
    memo.write_text("not a digest")
    assert hashing.start_hashing(path).digest() == sha(b"data")


def test_unreadable_file_is_bad_input(tmp_path: Path, cache: Path):
    with pytest.raises(BadInputError, match=r"cannot read|no such file"):
        hashing.start_hashing(tmp_path / "missing").digest()


def test_directory_digest_covers_names_sizes_and_contents(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OWLVIT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ckpt"
    (root / "d").mkdir(parents=True)
    (root / "_METADATA").write_bytes(b"{}")
    (root / "d" / "a").write_bytes(b"data")
    expected = hashlib.sha256(b"_METADATA\x002\x00{}d/a\x004\x00data").hexdigest()
    assert hashing.start_hashing(root).digest() == expected
    (root / "d" / "a").rename(root / "d" / "b")  # a new identity: hashed again, not remembered
    assert hashing.start_hashing(root).digest() != expected


def test_links_are_hashed_as_the_files_they_point_to(tmp_path: Path, monkeypatch):
    """A directory of links (a Hub cache snapshot, `cp -rs`) reads as its targets: the same
    digest and size as the real directory, not those of an empty one."""
    monkeypatch.setenv("OWLVIT_CACHE", str(tmp_path / "cache"))
    real = tmp_path / "real"
    (real / "d").mkdir(parents=True)
    (real / "_METADATA").write_bytes(b"{}")
    (real / "d" / "a").write_bytes(b"data")
    links = tmp_path / "links"
    links.mkdir()
    (links / "_METADATA").symlink_to(real / "_METADATA")
    (links / "d").symlink_to(real / "d", target_is_directory=True)
    assert hashing.total_size(links) == hashing.total_size(real) == 6
    assert hashing.start_hashing(links).digest() == hashing.start_hashing(real).digest()
