"""Where `verify` keeps its report: HF_DIR/owlvit_verification.json, which `push` turns into
the model card.

By default the report is kept in a directory owlvit wrote (it holds owlvit's conversion
record), so that convert, verify and push run in that order publish a card that shows the
verification, with nothing to remember. A directory owlvit did not write is never written
into unasked; asked (`record=True`) it is refused, before any model loads. An existing
record is replaced only when it is one verify wrote, and only as a file of the directory:
a symlink in its place is refused up front, and one planted later is replaced, never written
through (the report is written through the pinned directory, `model.pinned_dir`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owlvit_cli.errors import BadInputError, OutputError
from owlvit_cli.model.model_dir import RECORD_FILE, VERIFICATION_FILE

# Every report verify writes has these; a file without them is someone else's.
REPORT_KEYS = frozenset({"passed", "tool_version", "created"})


@dataclass(frozen=True)
class RecordPlan:
    """The decision, made before the slow part: `path` to write, or why nothing is written."""

    path: Path | None
    skipped: str | None = None  # said to the user when a default record is not made


def plan_record(hf_dir: Path, record: bool | None) -> RecordPlan:
    """`record`: True (asked), False (declined) or None (the default: only into a directory
    owlvit wrote)."""
    from owlvit_cli.atomic import check_writable_file
    from owlvit_cli.model.written_files import is_owlvit_output

    if record is False or not hf_dir.is_dir():  # a missing HF_DIR is verify's to report
        return RecordPlan(None)
    if not is_owlvit_output(hf_dir):
        why = f"{hf_dir} has no {RECORD_FILE}, so it was not written by `owlvit convert`"
        if record:
            raise BadInputError(
                f"cannot record the report: {why}, and owlvit writes only into its own directories",
                hint="drop --record",
            )
        return RecordPlan(None, f"report not recorded: {why}")
    path = hf_dir / VERIFICATION_FILE
    check_replaceable(path)
    try:
        check_writable_file(path)
    except OutputError as exc:  # a read-only copy can still be verified, unless asked
        if record:
            raise
        return RecordPlan(None, f"report not recorded: {exc}")
    return RecordPlan(path)


def keep_only_own_source(plan: RecordPlan, report: dict[str, Any], asked: bool) -> RecordPlan:
    """A default record is for HF_DIR's own checkpoint only: a comparison against another
    one (made on purpose, ignoring the source check) must not replace a valid record."""
    source = report.get("source")
    if (
        asked
        or plan.path is None
        or not isinstance(source, dict)
        or source.get("matches") is not False
    ):
        return plan
    return RecordPlan(
        None, "report not recorded: CKPT is not the checkpoint HF_DIR was converted from"
    )


def check_replaceable(path: Path) -> None:
    """Refuse to replace anything but a regular file verify wrote."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise BadInputError(
            f"{path} is a symlink or not a regular file; verify records only into a file "
            "of its own",
            hint="remove it, or pass --no-record",
        )
    if path.exists() and not is_verify_report(path):
        raise BadInputError(
            f"{path} was not written by `owlvit verify`, so it is not replaced",
            hint="move it away, or pass --no-record",
        )


def is_verify_report(path: Path) -> bool:
    from owlvit_cli.model.written_files import read_json_object

    report = read_json_object(path)
    return report is not None and set(report) >= REPORT_KEYS
