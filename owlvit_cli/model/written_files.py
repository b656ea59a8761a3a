"""Which files of a model directory owlvit can prove it wrote: all that an overwrite deletes.

A conversion record saying `{"tool": "owlvit"}` is only a claim: it may have been copied into
a directory of the user's, and a user may have added files to an output (an evaluation,
notes) or edited one (the model card). So the record lists every file convert wrote, with its
size, its sha256 (the smallest files, up to `HASHED_LIMIT` bytes together) and the identity
it had when written (inode and mtime: what proves the weights, whose sha256 would cost a
second pass over gigabytes; not ctime, which a `chmod -R` moves). A listed file is owlvit's
while its size and its identity or sha256 still match;
the verification report is owlvit's when it names the sha256 of the record beside it; the
record is owlvit's when it is the only other thing there. Everything else is the user's.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from owlvit_cli.model.model_dir import RECORD_FILE, TOOL_NAME, VERIFICATION_FILE

WRITTEN_KEY = "written"  # in the conversion record: {name: {size, sha256?, identity}}
RECORD_DIGEST_KEY = "record_sha256"  # in the verification report
HASHED_LIMIT = 64 << 20
NOT_OWLVIT = "it has no conversion record, so owlvit did not write it"


def describe_written(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The `written` block of the conversion record for files just written to `directory`."""
    stats = {name: os.lstat(directory / name) for name in names}
    described: dict[str, dict[str, Any]] = {}
    budget = HASHED_LIMIT
    for name in sorted(stats, key=lambda n: (stats[n].st_size, n)):
        info = stats[name]
        entry: dict[str, Any] = {"size": info.st_size, "identity": _identity(info)}
        if info.st_size <= budget:
            entry["sha256"] = _sha256(directory / name)
            budget -= info.st_size
        described[name] = entry
    return dict(sorted(described.items()))


def record_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unproven_files(directory: Path) -> str | None:
    """Why `directory` may not be replaced as an earlier owlvit output (its files owlvit
    cannot prove it wrote, named), or None when everything in it is owlvit's."""
    record_bytes = _regular_bytes(directory / RECORD_FILE)
    record = _json_object(record_bytes)
    if record is None or record.get("tool") != TOOL_NAME:
        return NOT_OWLVIT
    written = record.get(WRITTEN_KEY)
    if not isinstance(written, dict):
        return (
            "its conversion record lists no files (an older owlvit wrote it), so owlvit cannot "
            "tell its files from anyone else's"
        )
    assert record_bytes is not None
    foreign = []
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            if name == RECORD_FILE:
                continue
            if name == VERIFICATION_FILE and _verifies(entry, record_bytes):
                continue
            listed = written.get(name)
            if isinstance(listed, dict) and _matches(entry, listed):
                continue
            foreign.append(f"{name} (changed since owlvit wrote it)" if listed else name)
    if not foreign:
        return None
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return f"it holds files owlvit did not write: {shown}"


def _matches(entry: os.DirEntry[str], listed: dict[str, Any]) -> bool:
    info = entry.stat(follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode) or info.st_size != listed.get("size"):
        return False
    if listed.get("identity") == _identity(info):
        return True
    return listed.get("sha256") is not None and _sha256(Path(entry.path)) == listed["sha256"]


def _verifies(entry: os.DirEntry[str], record_bytes: bytes) -> bool:
    report = _json_object(_regular_bytes(Path(entry.path)))
    return report is not None and report.get(RECORD_DIGEST_KEY) == record_digest(record_bytes)


def _identity(info: os.stat_result) -> str:
    return f"{info.st_ino}:{info.st_mtime_ns}"


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _regular_bytes(path: Path, limit: int = HASHED_LIMIT) -> bytes | None:
    """A regular file's bytes (not a symlink, FIFO or device; not over `limit`), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return handle.read(limit + 1)


def is_owlvit_output(directory: Path) -> bool:
    """Written by `owlvit convert`: its conversion record, a regular file, names the tool.
    Enough to write a report into it; replacing its files takes `unproven_files`."""
    record = read_json_object(directory / RECORD_FILE)
    return record is not None and record.get("tool") == TOOL_NAME


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A small regular file's JSON object, else None (a link, a FIFO, too large, not JSON)."""
    return _json_object(_regular_bytes(path))


def _json_object(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
