"""Options and arguments every command shares, declared once: their metavars (the docs'
CKPT, OUT, HF_DIR, REPO_ID, IMAGE), help and shell completion."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer import _click as click  # Typer vendors click; its types are the ones it calls
from typer._click.shell_completion import CompletionItem
from typer._click.types import ParamType

from owlvit_cli.cli.output import Output
from owlvit_cli.errors import BadInputError
from owlvit_cli.model.dtypes import AUTO, DTYPE_ALIASES, DTYPES, normalize_dtype

DTYPE_CHOICES = (AUTO, *DTYPES)

if TYPE_CHECKING:
    from owlvit_cli.checkpoint.workdir import ResolvedCheckpoint

# Flags that overwrite, publish or skip a check: a typo is never "corrected" into one of them.
DANGEROUS_FLAGS = frozenset({"--force", "--overwrite", "--overwrite-card", "--save-card"})


def complete_paths(incomplete: str, *, directories_only: bool = False) -> list[str]:
    """File names for shell completion, done here because Typer's completion scripts do not
    fall back to the shell's own (fish's never does)."""
    head, prefix = os.path.split(incomplete)
    try:
        entries = sorted(os.scandir(os.path.expanduser(head) or "."), key=lambda e: e.name)
    except OSError:
        return []
    names = []
    for entry in entries:
        if not entry.name.startswith(prefix) or (entry.name[0] == "." and prefix[:1] != "."):
            continue
        is_dir = _is_dir(entry)
        if is_dir or not directories_only:
            names.append(os.path.join(head, entry.name) + ("/" if is_dir else ""))
    return names


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """A symlink loop or an unreadable target is completed as a plain name, not a traceback
    printed into the user's shell."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def complete_files(incomplete: str) -> list[str]:
    return complete_paths(incomplete)


def complete_directories(incomplete: str) -> list[str]:
    return complete_paths(incomplete, directories_only=True)


class DtypeType(ParamType):
    """`--dtype`: shows and completes the canonical names, accepts every alias."""

    name = "dtype"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return normalize_dtype(str(value), allow_auto=True)
        except BadInputError:
            self.fail(
                f"{value!r} is not one of {', '.join(DTYPE_CHOICES)} "
                f"(or {', '.join(a for a in DTYPE_ALIASES if a not in DTYPES)})",
                param,
                ctx,
            )

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        names = [AUTO, *DTYPE_ALIASES]
        return [CompletionItem(name) for name in names if name.startswith(incomplete)]


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print exactly one JSON object on stdout, nothing else: the result, or on failure "
        '{"error": {"code", "kind", "message"}}.',
    ),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="Print the result only: no progress, notes or warnings (errors stay)."
    ),
]
# A string, not a Path: a Path folds a URL's `//` into `/` before anyone can say what it is.
CheckpointArg = Annotated[
    str,
    typer.Argument(
        metavar="CKPT",
        help="A scenic OWL-ViT / OWLv2 checkpoint: a Flax msgpack file, an Orbax checkpoint "
        "directory, or a workdir of checkpoint_N entries (the latest is read). Local files "
        "only: a released checkpoint's name or a URL gets the command that downloads it.",
        autocompletion=complete_files,
        show_default=False,
    ),
]
StepOption = Annotated[
    int | None,
    typer.Option(
        "--step",
        min=0,
        metavar="N",
        help="With a workdir as CKPT: read checkpoint_N instead of the latest.",
    ),
]
HFDirArg = Annotated[
    Path,
    typer.Argument(
        metavar="HF_DIR",
        help="A model directory written by `owlvit convert`.",
        autocompletion=complete_directories,
        show_default=False,
    ),
]
DtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype",
        click_type=DtypeType(),
        metavar="[" + "|".join(DTYPE_CHOICES) + "]",
        help="Weights dtype. auto keeps the dtype the checkpoint's weights are stored in "
        "(float32 where they mix dtypes; a lone scalar does not count). Also accepts "
        "fp32/f32, fp16/f16/half, bf16.",
    ),
]


def examples(*lines: str) -> str:
    """An "Examples" section for a command's help, kept verbatim by click (`\\b`)."""
    return "\n\n\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def make_output(json_mode: bool, debug: bool, quiet: bool = False) -> Output:
    return Output(json_mode=json_mode, debug=debug, quiet=quiet)


def checkpoint_path(out: Output, checkpoint: str | Path, step: int | None) -> ResolvedCheckpoint:
    """The checkpoint CKPT and --step name (a workdir's latest, or its `step`), said on stderr
    when it was picked from a workdir; a path for every reader, and the workdir it came from
    for the commands that must not write into it. A URL or a released checkpoint's name that
    is no local file is refused with the command that downloads it."""
    from owlvit_cli.checkpoint.workdir import resolve_checkpoint

    resolved = resolve_checkpoint(checkpoint, step)
    note = resolved.describe()
    if note is not None:
        out.info(note)
    return resolved
