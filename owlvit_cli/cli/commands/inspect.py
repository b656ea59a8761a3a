"""`owlvit inspect CKPT`: the param tree, its layout and the config derived from shapes."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from owlvit_cli.cli.commands.common import CheckpointArg, DebugOption, JsonOption, make_output
from owlvit_cli.cli.output import run_guarded
from owlvit_cli.cli.render import human_bytes
from owlvit_cli.errors import ExitCode
from owlvit_cli.model.model_dir import LAYOUT_DESCRIPTIONS


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)


def inspect_command(
    checkpoint: CheckpointArg,
    depth: Annotated[
        int | None, typer.Option("--depth", min=1, help="Collapse the tree below this depth.")
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option("--filter", help="Only params whose path matches this glob."),
    ] = None,
    mapping: Annotated[
        bool, typer.Option("--mapping", help="Show each tensor's transformers name.")
    ] = False,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show a checkpoint's params (path, shape, dtype, size), layout and derived config."""
    out = make_output(json_mode, debug)

    def action() -> int:
        from owlvit_cli.checkpoint.inspection import inspect_report
        from owlvit_cli.checkpoint.reader import open_checkpoint

        with open_checkpoint(checkpoint) as ckpt:
            report = inspect_report(ckpt, filter_)
            if mapping:
                from owlvit_cli.convert.mapping import mapping_rows

                if not report["problems"]:
                    report["mapping"] = mapping_rows(ckpt, filter_)
        out.result(report, lambda console: render(console, report, depth))
        if report["problems"]:
            out.error(f"{len(report['problems'])} problem(s): convert would refuse this checkpoint")
            return ExitCode.BAD_INPUT
        return ExitCode.OK

    run_guarded(out, action)


def render(console: Console, report: dict[str, Any], depth: int | None) -> None:
    console.print(_param_tree(report, depth))
    if "mapping" in report:
        console.print(_mapping_table(report["mapping"]))
    if report["config"] is not None:
        console.print(_summary(report))
    if report["problems"]:
        _print_problems(console, report["problems"])


def _print_problems(console: Console, problems: list[str]) -> None:
    """What convert would refuse, one unwrapped line each (grep finds a tensor's name), and
    printed literally (tensor names are never markup)."""
    console.print(Text("problems (convert would refuse this checkpoint):", style="bold red"))
    for problem in problems:
        console.print(Text(f"  • {problem}"), soft_wrap=True)


def _param_tree(report: dict[str, Any], depth: int | None) -> Tree:
    tree = Tree(f"[bold]{escape(report['file'])}[/bold]")
    nodes: dict[str, Tree] = {}
    collapsed: dict[str, list[int]] = {}
    for row in report["params"]:
        parts = row["path"].split("/")
        if depth is not None and len(parts) > depth:
            key = "/".join(parts[:depth])
            counts = collapsed.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] += row["size"]
            parts = parts[:depth]
            leaf = None
        else:
            leaf = row
        parent = tree
        for i, part in enumerate(parts[:-1] if leaf else parts):
            key = "/".join(parts[: i + 1])
            if key not in nodes:
                nodes[key] = parent.add(f"[bold blue]{escape(part)}[/bold blue]")
            parent = nodes[key]
        if leaf:
            shape = "×".join(map(str, leaf["shape"])) or "scalar"
            parent.add(
                f"{escape(parts[-1])}  [cyan]{shape}[/cyan]  "
                f"[magenta]{escape(leaf['dtype'])}[/magenta]  "
                f"[dim]{human_bytes(leaf['nbytes'])}[/dim]"
            )
    for key, (count, size) in collapsed.items():
        nodes[key].label = f"{nodes[key].label}  [dim]({count} tensors, {size:,} params)[/dim]"
    return tree


def _mapping_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("scenic", "transformers", "transform", title="mapping")
    for row in rows:
        target = escape(row["target"]) if row["target"] else f"[dim]ignored: {row['reason']}[/dim]"
        table.add_row(escape(row["source"]), target, row["transform"])
    return table


def _summary(report: dict[str, Any]) -> Panel:
    config = report["config"]
    vision, text = config["vision"], config["text"]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("layout", f"{report['layout']}: {LAYOUT_DESCRIPTIONS[report['layout']]}")
    table.add_row(
        "model",
        f"OWL-ViT v{report['version']}"
        + (" (objectness head)" if config["objectness_head"] else ""),
    )
    table.add_row(
        "vision",
        f"width {vision['hidden_size']}, {vision['num_hidden_layers']} layers, "
        f"{vision['num_attention_heads']} heads, patch {vision['patch_size']}, "
        f"image {vision['image_size']}px",
    )
    table.add_row(
        "text",
        f"width {text['hidden_size']}, {text['num_hidden_layers']} layers, "
        f"{text['num_attention_heads']} heads, context {text['max_position_embeddings']}, "
        f"vocab {text['vocab_size']}",
    )
    table.add_row("embed dim", str(config["projection_dim"]))
    table.add_row("parameters", f"{report['num_parameters']:,} in {report['num_tensors']} tensors")
    by_dtype = ", ".join(f"{k} {human_bytes(v)}" for k, v in report["bytes_by_dtype"].items())
    table.add_row("bytes", by_dtype)
    table.add_row("file size", human_bytes(report["file_size"]))
    if report["other_top_level_keys"]:
        table.add_row("ignored keys", escape(", ".join(report["other_top_level_keys"])))
    return Panel(Group(table), title="checkpoint", expand=False)
