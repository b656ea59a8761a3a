"""The project's error types. Each carries its exit code so the CLI maps errors in one place."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """The process exit codes every command documents."""

    OK = 0
    CHECK_FAILED = 1
    BAD_INPUT = 2
    HUB_ERROR = 3
    INTERRUPTED = 130
    INTERNAL_ERROR = 70


# `kind` in the `--json` error object for failures that are not an
# OwlvitError: a command line click refused, a failed check, Ctrl-C, a bug.
USAGE_KIND = "usage"
CHECK_FAILED_KIND = "check_failed"
INTERRUPTED_KIND = "interrupted"
INTERNAL_KIND = "internal"


class OwlvitError(Exception):
    """Base of every error the tool reports as one line instead of a traceback.

    The message names no command-line flag, so it reads right from the Python API too; what a
    CLI user can do about it goes in `hint` ("pass --overwrite to replace it"), which the CLI
    appends to the line.
    """

    exit_code: ExitCode = ExitCode.BAD_INPUT
    kind: str = "bad_input"  # what a CI script branches on in the `--json` error object

    def __init__(self, message: str = "", *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class BadInputError(OwlvitError):
    """The user gave something we cannot use: a path, an option, a file's contents."""


class CheckpointError(BadInputError):
    """The file is not a readable scenic OWL-ViT checkpoint."""

    kind = "checkpoint"


class MappingError(BadInputError):
    """The checkpoint's tensors do not map one-to-one onto the transformers model."""

    kind = "mapping"


class ModelDirError(BadInputError):
    """A transformers model directory is missing files or does not match the checkpoint."""

    kind = "model_dir"


class OutputError(BadInputError):
    """An output could not be written (disk full, permissions); nothing partial is left."""

    kind = "output"


class CheckFailedError(OwlvitError):
    """A numerical check ran and failed (verify)."""

    exit_code = ExitCode.CHECK_FAILED
    kind = CHECK_FAILED_KIND


class HubError(OwlvitError):
    """The Hub (or the network in front of it) refused or failed a request."""

    exit_code = ExitCode.HUB_ERROR
    kind = "hub"


def error_object(code: int, kind: str, message: str) -> dict[str, Any]:
    """The `--json` shape of a failure; `message` is the stderr line."""
    return {"error": {"code": int(code), "kind": kind, "message": message}}


def first_line(exc: BaseException | str, limit: int = 200) -> str:
    """An exception (or text) as one line for an error message: the first non-blank line,
    else the exception's type name, shortened to `limit` characters."""
    text = str(exc).strip()
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if not line and isinstance(exc, BaseException):
        line = type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
