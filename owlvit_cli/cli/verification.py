"""Verification as both `verify` and `convert --verify` show it: run, report, render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
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
    record: bool | None = None,
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
    if result.recorded is not None:
        out.info(
            f"recorded the report in {escape(str(result.recorded))} (push shows it in the card)"
        )
    elif result.record_skipped is not None:
        out.info(escape(result.record_skipped))
    return result.report


def verification_error(report: dict[str, Any]) -> dict[str, Any]:
    """The `error` member a failed check adds to the --json result (one object, as for every
    other failure), so a CI script reads `.error.code` the same way everywhere."""
    from owlvit_cli.verify.report import failure_summary

    return error_object(ExitCode.CHECK_FAILED, CHECK_FAILED_KIND, failure_summary(report))


def render_verification(
    console: Console, report: dict[str, Any], verbose: bool = False, more: str = ""
) -> None:
    """One verdict line per level with its worst margin, and each failure in full; with
    `verbose`, every level's table, what it compared and the time of each step (`more` says
    how to ask for them). A checkpoint that is not HF_DIR's source prints nothing here: the
    error line on stderr says it, once."""
    if "source" in report["failed"]:
        return
    source = report.get("source")
    if source is not None:
        mark = {True: "[green]✓[/green]", False: "[bold red]✗[/bold red]"}.get(
            source["matches"], "[yellow]?[/yellow]"
        )
        console.print(f"{mark} source: {escape(source['message'])}")
    if "dtype" in report:
        console.print(f"weights stored as {report['dtype']} (from {report['dtype_source']})")
    for level, title in LEVEL_TITLES.items():
        rows = [r for r in report["outputs"] if r["level"] == level]
        if not rows:
            continue
        if verbose:
            console.print(_level_table(title, rows))
            for line in _about(report["levels"].get(level, {})):
                console.print(f"[dim]{escape(line)}[/dim]", highlight=False)
        else:
            for line in level_verdict(level, rows):
                console.print(line, highlight=False)
    seconds = sum(report["timings"].values())
    if verbose:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in report["timings"].items())
        console.print(f"[dim]timings: {timings}[/dim]")
    if report["passed"]:
        console.print(
            f"[green]✓ verified[/green] in {seconds:.1f}s: the converted model matches the Flax "
            "model" + ("" if verbose or not more else f" [dim]({escape(more)})[/dim]")
        )
    else:
        failed = sorted({name.split("/")[0] for name in report["failed"]}, key=_level_order)
        console.print(f"[bold red]✗ verification failed[/bold red]: {', '.join(failed)}")


VERDICT_NAMES = {
    "mapping": "1. mapping",
    "stock": "2. stock transformers",
    "precision": "   precision loss of the stored weights",
    "processor": "3. transformers processor",
}


def level_verdict(level: str, rows: list[dict[str, Any]]) -> list[str]:
    """`✓ 1. mapping: 9 outputs within tolerance; worst pred_logits at 18% of it (8.23e-06 ≤
    4.6e-05)`, then a line for each output over its tolerance. Rows without a tolerance are
    measured, never judged: they read as such."""
    name = VERDICT_NAMES[level]
    checked = [r for r in rows if r["tolerance"] is not None]
    if not checked:
        values = ", ".join(f"{r['name']} {_value(r)}" for r in rows)
        return [f"[dim]· {name} (informational, never fails): max |diff| {escape(values)}[/dim]"]
    failed = [r for r in checked if not r["passed"]]
    if not failed:
        worst = max(checked, key=margin)
        mark = "[green]✓[/green]"
        text = (
            f"{mark} {name}: {len(checked)} outputs within tolerance; worst {worst['name']} at "
            f"{_percent(margin(worst))} of it ({_value(worst)} ≤ {worst['tolerance']:.1e})"
        )
        return [text + _informational(rows)]
    lines = [
        f"[bold red]✗[/bold red] {name}: {len(failed)} of {len(checked)} outputs over tolerance"
        + _informational(rows)
    ]
    for row in sorted(failed, key=margin, reverse=True):
        lines.append(f"    [bold red]✗[/bold red] {row['name']}: {_failure(row)}")
    return lines


def _failure(row: dict[str, Any]) -> str:
    """`max |diff| 1.20e-02 > tolerance 4.6e-05 (261× it)`; a row that failed on something
    else than its size (the top detections' order, a count of bad tensors) says so in its
    note."""
    over = margin(row)
    comparison = ">" if over > 1 else "≤"
    text = f"max |diff| {_value(row)} {comparison} tolerance {row['tolerance']:.1e}"
    if 1 < over < float("inf"):
        text += f" ({over:.3g}× it)"
    return text + (f" [dim]({escape(row['note'])})[/dim]" if row["note"] else "")


def margin(row: dict[str, Any]) -> float:
    """max |diff| as a fraction of the tolerance (1 is the limit)."""
    tolerance, diff = row["tolerance"], row["max_abs"]
    if tolerance:
        return diff / tolerance
    return 0.0 if diff == 0 else float("inf")


def _percent(fraction: float) -> str:
    return f"{fraction:.0%}" if fraction >= 0.01 or fraction == 0 else "<1%"


def _informational(rows: list[dict[str, Any]]) -> str:
    count = sum(r["tolerance"] is None for r in rows)
    return f" [dim](+{count} informational)[/dim]" if count else ""


def _value(row: dict[str, Any]) -> str:
    """Token ids differ by a count; everything else by a float, as in the tables."""
    return str(int(row["max_abs"])) if row["name"] == "input_ids" else f"{row['max_abs']:.2e}"


def _level_order(level: str) -> int:
    return list(LEVEL_TITLES).index(level) if level in LEVEL_TITLES else len(LEVEL_TITLES)


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
    table = Table(
        "output", "max |diff|", "tolerance", "result", title=escape(title), title_justify="left"
    )
    for row in rows:
        informational = row["tolerance"] is None
        if informational:
            status = "[dim]not checked[/dim]"
        else:
            status = "[green]ok[/green]" if row["passed"] else "[bold red]FAIL[/bold red]"
        value = _value(row)
        if informational:
            value = f"[dim]{value}[/dim]"
        note = f" [dim]({escape(row['note'])})[/dim]" if row["note"] else ""
        tol = "[dim]none[/dim]" if informational else f"{row['tolerance']:.1e}"
        table.add_row(escape(row["name"]) + note, value, tol, status)
    return table
