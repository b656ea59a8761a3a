"""`owlvit inspect CKPT`: the param tree, its layout and the config derived from shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from owlvit_cli.cli.commands.common import (
    CheckpointArg,
    DebugOption,
    JsonOption,
    QuietOption,
    StepOption,
    checkpoint_path,
    examples,
    make_output,
)
from owlvit_cli.cli.output import error_object, run_guarded
from owlvit_cli.cli.render import human_bytes, key_value_grid
from owlvit_cli.errors import CheckpointError, ExitCode
from owlvit_cli.model.model_dir import LAYOUT_DESCRIPTIONS

if TYPE_CHECKING:
    from owlvit_cli.checkpoint.inspection import FoldedRows

HELP = (
    "Show a checkpoint's params (path, shape, dtype, size) as a tree, and a summary: layout, "
    "OWL version, the config derived from the tensors alone, parameter count and bytes by "
    "dtype. Reads headers only, so it is fast on any size. --filter takes a glob on the "
    "file's own names or on current scenic names (e.g. resblocks.0 or resblocks_0); "
    "--mapping shows each tensor's transformers name instead of the tree (tab-separated off "
    "a terminal)."
    + examples(
        "owlvit inspect clip_vit_l14_d83d374 --depth 4",
        "owlvit inspect clip_vit_l14_d83d374 --all",
        "owlvit inspect clip_vit_l14_d83d374 --filter '*resblocks.0/attn*'",
        "owlvit inspect clip_vit_l14_d83d374 --mapping | grep class_head",
        "owlvit inspect clip_vit_l14_d83d374 --json | jq .config",
    )
)
MAPPING_COLUMNS = ("source", "transformers", "transform")


def register(app: typer.Typer) -> None:
    app.command(
        "inspect",
        help=HELP,
        short_help="the param tree, layout and config derived from the tensors",
    )(inspect_command)


def inspect_command(
    checkpoint: CheckpointArg,
    depth: Annotated[
        int | None,
        typer.Option("--depth", min=1, metavar="N", help="Collapse the tree below depth N."),
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option(
            "--filter",
            metavar="GLOB",
            help="Only tensors whose name matches GLOB: the file's own name or the current "
            "scenic name (with --mapping also the transformers name).",
        ),
    ] = None,
    mapping: Annotated[
        bool,
        typer.Option(
            "--mapping",
            help="Show each tensor's transformers name and transform (or why it is ignored) "
            "instead of the tree.",
        ),
    ] = False,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Show every tensor of the tree: repeated transformer blocks with the same "
            "tensors are otherwise shown once (resblocks.{0..11}).",
        ),
    ] = False,
    step: StepOption = None,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
    quiet: QuietOption = False,
) -> None:
    out = make_output(json_mode, debug, quiet)

    def action() -> int:
        source = checkpoint_path(out, checkpoint, step)
        from owlvit_cli.checkpoint.reader import open_checkpoint
        from owlvit_cli.convert.inspection import inspect_report

        with open_checkpoint(source) as ckpt:
            report = inspect_report(ckpt, filter_, mapping=mapping)
        if filter_ and not report.get("mapping", report["params"]):
            out.warn(
                f"no tensor matches --filter {escape(repr(filter_))} "
                f"(tried the file's own names and current scenic names)"
            )
        problems = f"{len(report['problems'])} problem(s): convert would refuse this checkpoint"
        if report["problems"]:  # the JSON says it too: `.error.code` is the exit code
            report.update(error_object(ExitCode.BAD_INPUT, CheckpointError.kind, problems))
        out.result(report, lambda console: render(console, report, depth, fold=not show_all))
        if report["problems"]:
            out.error(problems)
            return ExitCode.BAD_INPUT
        return ExitCode.OK

    run_guarded(out, action)


def render(
    console: Console, report: dict[str, Any], depth: int | None, *, fold: bool = True
) -> None:
    """The summary first (what most runs are for), then the tree or the mapping."""
    if "mapping" in report and not console.is_terminal:
        print_mapping_tsv(console, report["mapping"])  # for grep, cut and awk: rows only
        return
    if report["config"] is not None:
        console.print(_summary(report))
    if "mapping" in report:
        _print_mapping(console, report["mapping"])
    elif report["params"]:
        _print_tree(console, report, depth, fold)
    if report["problems"]:
        _print_problems(console, report["problems"])


def _print_problems(console: Console, problems: list[str]) -> None:
    """What convert would refuse, one unwrapped line each (grep finds a tensor's name), and
    printed literally (tensor names are never markup)."""
    console.print(Text("problems (convert would refuse this checkpoint):", style="bold red"))
    for problem in problems:
        console.print(Text(f"  • {problem}"), soft_wrap=True)


def _print_tree(console: Console, report: dict[str, Any], depth: int | None, fold: bool) -> None:
    from owlvit_cli.checkpoint.inspection import fold_repeated_blocks

    rows = [{**row, "repeat": 1} for row in report["params"]]
    folded = fold_repeated_blocks(report["params"]) if fold else None
    console.print(_param_tree(report["file"], folded.rows if folded else rows, depth, folded))
    visible = [k for k in folded.blocks if depth is None or k.count("/") < depth] if folded else []
    if folded and visible:
        hidden = sum(count - 1 for count in folded.blocks.values())
        console.print(
            "[dim]repeated blocks with the same tensors are shown once, as "
            f"resblocks.{{first..last}} ({hidden} not shown); --all shows every tensor[/dim]"
        )


def _param_tree(
    file: str, rows: list[dict[str, Any]], depth: int | None, folded: FoldedRows | None
) -> Tree:
    tree = Tree(f"[bold]{escape(file)}[/bold]")
    nodes: dict[str, Tree] = {}
    collapsed: dict[str, list[int]] = {}
    for row in rows:
        parts = row["path"].split("/")
        if depth is not None and len(parts) > depth:
            key = "/".join(parts[:depth])
            counts = collapsed.setdefault(key, [0, 0])
            counts[0] += row["repeat"]
            counts[1] += row["size"] * row["repeat"]
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
    for key, count in (folded.blocks if folded else {}).items():
        if key in nodes:
            nodes[key].label = f"{nodes[key].label}  [dim]({count} blocks, each as below)[/dim]"
    for key, (count, size) in collapsed.items():
        nodes[key].label = f"{nodes[key].label}  [dim]({count} tensors, {size:,} params)[/dim]"
    return tree


def _mapping_cells(row: dict[str, Any]) -> tuple[str, str, str]:
    if row["target"] is None:
        return row["source"], "-", f"ignored: {row['reason']}"
    return row["source"], row["target"], row["transform"]


def print_mapping_tsv(console: Console, rows: list[dict[str, Any]]) -> None:
    for cells in [MAPPING_COLUMNS, *map(_mapping_cells, rows)]:
        console.file.write("\t".join(cells) + "\n")  # rich would expand the tabs


def _print_mapping(console: Console, rows: list[dict[str, Any]]) -> None:
    """A table when full names fit the terminal; else one block per tensor, names whole (a
    truncated name cannot be told from its neighbours)."""
    cells = [_mapping_cells(row) for row in rows]
    widths = [max([len(c[i]) for c in cells] + [len(MAPPING_COLUMNS[i])]) for i in range(3)]
    if sum(widths) + 10 <= console.width:
        table = Table(*MAPPING_COLUMNS, title="mapping", title_justify="left")
        for column in table.columns:
            column.no_wrap = True
        for source, target, transform in cells:
            table.add_row(escape(source), escape(target), escape(transform))
        console.print(table)
        return
    for source, target, transform in cells:
        console.print(escape(source), soft_wrap=True)
        console.print(f"  → {escape(target)}  [dim]{escape(transform)}[/dim]", soft_wrap=True)


def _summary(report: dict[str, Any]) -> Panel:
    config = report["config"]
    vision, text = config["vision"], config["text"]
    table = key_value_grid()
    table.add_row("format", report["format"])
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
