"""Which files of a model directory a push uploads, and why each other file stays behind.

By default only the converted model's own files (`model_dir.model_files`): a secrets file, a
notebook checkpoint or a verify `--save-outputs` archive left in the directory is a common
accident, and a push must not publish it. `--include` adds files and `--exclude` removes
them, matched as `hf upload` matches them (huggingface_hub's `filter_repo_objects`: fnmatch
on the repo path, a pattern ending in `/` means everything under that folder). Hidden files
and folders (a path part starting with `.`) stay behind unless an `--include` pattern that
itself names a hidden part (`.env`, `.*`, `.config/*`) matches them: `--include '*'` alone
never publishes `.env`.

No byte comes from outside the directory: a symlink is judged by its name and by what it
resolves to (through any chain of links), symlinked folders are not walked, and the file is
later read from its resolved path, so a link that leads out (or a model file that leads to a
hidden one) is refused before anything is read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from owlvit_cli.errors import BadInputError
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
    sources: dict[str, Path]  # each chosen file's own path, symlinks resolved: what is read


def matches(path: str, pattern: str) -> bool:
    """`hf upload`'s pattern semantics, from huggingface_hub itself."""
    from huggingface_hub.utils import filter_repo_objects

    return any(True for _ in filter_repo_objects([path], allow_patterns=[pattern]))


def is_hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


def is_forbidden(path: str) -> bool:
    return bool(FORBIDDEN_FOLDERS.intersection(path.split("/")[:-1]))


def names_hidden(pattern: str) -> bool:
    """Whether a pattern asks for hidden paths by name (a part starting with `.`)."""
    return any(part.startswith(".") for part in pattern.replace("\\", "/").split("/"))


def select_files(
    model_dir: ModelDir, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> Selection:
    """The files to upload, each checked to be read from inside the directory.

    A symlink is judged by both its own name and what it resolves to: one that leads outside
    the directory is refused (BadInputError) if it would be uploaded, and one that leads to a
    hidden file is hidden. Symlinked directories are not followed.
    """
    root = model_dir.path
    real_root = Path(os.path.realpath(root))
    defaults = set(model_files(model_dir))
    chosen: list[str] = []
    sources: dict[str, Path] = {}
    unsafe: list[str] = []
    files, left_out = directory_files(root)
    # A model file reached only through a symlinked folder (a shard `sub/x` with `sub` a link).
    unsafe += [
        f"{path} (through a symlinked folder)"
        for path in sorted(defaults - set(files))
        if not any(matches(path, pattern) for pattern in exclude)
    ]
    for path in files:
        real = Path(os.path.realpath(root / path))
        target = _inside(real, real_root)
        linked = target != path
        reason = _reason(path, target if linked else None, defaults, include, exclude)
        if reason is not None:
            left_out.append(LeftOut(path, reason))
        elif target is None or (path in defaults and linked and _private(target)):
            unsafe.append(f"{path} -> {real}")
        else:
            chosen.append(path)
            sources[path] = real
    if unsafe:
        raise BadInputError(
            f"refusing to upload symlinks that lead outside {root} or to a hidden file: "
            f"{', '.join(unsafe)}",
            hint="replace each link with a copy of the file, or --exclude it",
        )
    order = {name: i for i, name in enumerate(model_files(model_dir))}
    chosen.sort(key=lambda p: (p in order, order.get(p, 0), p))
    return Selection(chosen, sorted(left_out, key=lambda item: item.path), sources)


def _reason(
    path: str,
    target: str | None,
    defaults: set[str],
    include: Sequence[str],
    exclude: Sequence[str],
) -> str | None:
    """Why `path` stays behind (None: it goes up). `target`: where a symlink leads, relative to
    the directory (None for a plain file, or a link out of the directory)."""
    names = [path, *([target] if target is not None else [])]
    included = [p for p in include if matches(path, p)]
    excluded = next((p for p in exclude if matches(path, p)), None)
    if any(is_forbidden(name) for name in names):
        return "not allowed on the Hub"
    if excluded is not None:
        return f"excluded by {excluded}"
    if path in defaults:
        return None
    if any(is_hidden(name) for name in names):
        # Asked for by a pattern that names hidden files, for the link or for its target.
        if any(names_hidden(p) for p in include if any(matches(n, p) for n in names)):
            return None
        return "hidden" if is_hidden(path) else f"hidden (a symlink to {target})"
    return None if included else "not a model file"


def _inside(real: Path, real_root: Path) -> str | None:
    """`real` as a repo path relative to the directory, or None when it lies outside."""
    try:
        return real.relative_to(real_root).as_posix()
    except ValueError:
        return None


def _private(path: str) -> bool:
    return is_hidden(path) or is_forbidden(path)


def directory_files(root: Path) -> tuple[list[str], list[LeftOut]]:
    """Every file under root as a repo path, sorted (symlinks to files included), and what is
    walked past: symlinked directories (never followed) and symlinks to nothing."""
    files: list[str] = []
    passed: list[LeftOut] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in dirs:
            if (base / name).is_symlink():
                passed.append(
                    LeftOut(_repo_path(root, base / name), "symlinked folder, not followed")
                )
        for name in names:
            path = base / name
            if path.is_file():
                files.append(_repo_path(root, path))
            elif path.is_symlink():
                passed.append(LeftOut(_repo_path(root, path), "symlink to nothing"))
    return sorted(files), passed


def _repo_path(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
