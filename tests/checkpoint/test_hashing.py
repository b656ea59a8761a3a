"""The checkpoint digest: right, remembered per file identity, recomputed when it changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from owlvit_cli.checkpoint import hashing
from owlvit_cli.errors import BadInputError


def test_digest_is_remembered_until_the_file_changes(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OWLVIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "ckpt"
    path.write_bytes(b"a" * 1000)
    first = hashing.start_hashing(path)
    assert isinstance(first, hashing.FileHasher)
    assert first.digest() == hashlib.sha256(b"a" * 1000).hexdigest()
    again = hashing.start_hashing(path)
    assert isinstance(again, hashing.KnownDigest) and again.digest() == first.digest()
    path.write_bytes(b"b" * 1000)  # same size, new content and mtime
    os.utime(path, ns=(1, 1))
    changed = hashing.start_hashing(path)
    assert isinstance(changed, hashing.FileHasher)
    assert changed.digest() == hashlib.sha256(b"b" * 1000).hexdigest()


def test_damaged_memo_is_ignored(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OWLVIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "ckpt"
    path.write_bytes(b"data")
    hashing.start_hashing(path).digest()
    (memo,) = (tmp_path / "cache" / "sha256").iterdir()
    memo.write_text("not a digest")
    assert hashing.start_hashing(path).digest() == hashlib.sha256(b"data").hexdigest()


def test_unreadable_file_is_bad_input(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OWLVIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BadInputError, match="cannot read"):
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
