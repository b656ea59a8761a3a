"""Verification as both `verify` and `convert --verify` show it: run, report, render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from owlvit_cli.cli.output import Output, error_object
from owlvit_cli.errors import CHECK_FAILED_KIND, ExitCode

LEVEL_TITLES = {
    "mapping": "1. mapping (scenic semantics patched in, float32 compute)",
    "stock": "2. stock transformers (same inputs)",
    "precision": "   precision loss of the stored weights",
    "processor": "3. transformers processor vs scenic's notebook and evaluator preprocessing",
}


def verify_and_report(
    out: Output,
    checkpoint: Path,
    hf_dir: Path,
    options: Any = None,
    record: bool = False,
    save_outputs: Path | None = None,
    save_viz: Path | None = None,
) -> dict[str, Any]:
    """Run the core verification with this command's display; say why it failed on stderr."""
    from owlvit_cli.api import verify_conversion
    from owlvit_cli.cli.process import hold_until_exit
    from owlvit_cli.verify.report import failure_summary

    result = verify_conversion(
        checkpoint,
        hf_dir,
        options,
        record=record,
        save_outputs=save_outputs,
        save_viz=save_viz,
        progress=out,
    )
    hold_until_exit(result.models)
    if not result.report["passed"]:
        out.error(failure_summary(result.report))
    return result.report


def verification_error(report: dict[str, Any]) -> dict[str, Any]:
    """The `error` member a failed check adds to the --json result (one object, as for every
    other failure), so a CI script reads `.error.code` the same way everywhere."""
    from owlvit_cli.verify.report import failure_summary

    return error_object(ExitCode.CHECK_FAILED, CHECK_FAILED_KIND, failure_summary(report))


def render_verification(console: Console, report: dict[str, Any]) -> None:
    source = report.get("source")
    if source is not None:
        mark = {True: "[green]✓[/green]", False: "[bold red]✗[/bold red]"}.get(
            source["matches"], "[yellow]?[/yellow]"
        )
        console.print(f"{mark} source: {source['message']}")
    if "dtype" in report:
        console.print(f"weights stored as {report['dtype']} (from {report['dtype_source']})")
    for level, title in LEVEL_TITLES.items():
        rows = [r for r in report["outputs"] if r["level"] == level]
        if rows:
            console.print(_level_table(title, rows))
            for line in _about(report["levels"].get(level, {})):
                console.print(f"[dim]{line}[/dim]", highlight=False)
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in report["timings"].items())
    console.print(f"[dim]timings: {timings}[/dim]")
    if report["passed"]:
        console.print("[green]✓ verified[/green]: the converted model matches the Flax model")
    else:
        console.print(f"[bold red]✗ verification failed[/bold red]: {', '.join(report['failed'])}")


def _about(level: dict[str, Any]) -> list[str]:
    """What the level compared and where its tolerances come from, under its table."""
    lines = []
    if "reference" in level:
        lines.append(f"{level['compared']} vs {level['reference']}")
    if "tolerance" in level:
        lines.append(f"tolerance {level['tolerance']} ({level['tolerance_source']})")
    sources = sorted(set(level.get("tolerance_sources", {}).values()))
    if sources:
        lines.append(f"tolerances: {'; '.join(sources)}")
    return lines


def _level_table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table("output", "max |diff|", "tolerance", "result", title=title, title_justify="left")
    for row in rows:
        informational = row["tolerance"] is None
        if informational:
            status = "[dim]info[/dim]"
        else:
            status = "[green]ok[/green]" if row["passed"] else "[bold red]FAIL[/bold red]"
        value = str(int(row["max_abs"])) if row["name"] == "input_ids" else f"{row['max_abs']:.2e}"
        note = f" [dim]({row['note']})[/dim]" if row["note"] else ""
        tol = "-" if informational else f"{row['tolerance']:.1e}"
        table.add_row(row["name"] + note, value, tol, status)
    return table
