"""Which files of a model directory a push uploads, and why each other file stays behind.

By default only the converted model's own files (`model_dir.model_files`): a secrets file, a
notebook checkpoint or a verify `--save-outputs` archive left in the directory is a common
accident, and a push must not publish it. `--include` adds files and `--exclude` removes
them, matched as `hf upload` matches them (huggingface_hub's `filter_repo_objects`: fnmatch
on the repo path, a pattern ending in `/` means everything under that folder). Hidden files
and folders (a path part starting with `.`) stay behind unless an `--include` pattern that
itself names a hidden part (`.env`, `.*`, `.config/*`) matches them: `--include '*'` alone
never publishes `.env`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from owlvit_cli.model.model_dir import ModelDir, model_files

# huggingface_hub refuses to commit these folders (FORBIDDEN_FOLDERS); never part of a model.
FORBIDDEN_FOLDERS = {".git", ".cache"}


@dataclass(frozen=True)
class LeftOut:
    """A file in the directory that is not uploaded, and the reason."""

    path: str
    reason: str  # "not a model file", "hidden", "excluded by PATTERN", "not allowed on the Hub"


@dataclass(frozen=True)
class Selection:
    files: list[str]  # repo paths, in upload order (README.md last)
    left_out: list[LeftOut]


def matches(path: str, pattern: str) -> bool:
    """`hf upload`'s pattern semantics, from huggingface_hub itself."""
    from huggingface_hub.utils import filter_repo_objects

    return any(True for _ in filter_repo_objects([path], allow_patterns=[pattern]))


def is_hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


def names_hidden(pattern: str) -> bool:
    """Whether a pattern asks for hidden paths by name (a part starting with `.`)."""
    return any(part.startswith(".") for part in pattern.replace("\\", "/").split("/"))


def select_files(
    model_dir: ModelDir, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> Selection:
    defaults = set(model_files(model_dir))
    chosen: list[str] = []
    left_out: list[LeftOut] = []
    for path in directory_files(model_dir.path):
        included = [p for p in include if matches(path, p)]
        excluded = next((p for p in exclude if matches(path, p)), None)
        if FORBIDDEN_FOLDERS.intersection(path.split("/")[:-1]):
            reason: str | None = "not allowed on the Hub"
        elif excluded is not None:
            reason = f"excluded by {excluded}"
        elif path in defaults:
            reason = None
        elif is_hidden(path):
            reason = None if any(names_hidden(p) for p in included) else "hidden"
        else:
            reason = None if included else "not a model file"
        if reason is None:
            chosen.append(path)
        else:
            left_out.append(LeftOut(path, reason))
    order = {name: i for i, name in enumerate(model_files(model_dir))}
    chosen.sort(key=lambda p: (p in order, order.get(p, 0), p))
    return Selection(chosen, left_out)


def directory_files(root: Path) -> list[str]:
    """Every regular file under root as a repo path, sorted (symlinks to files included)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
