"""`owlvit env`: the environment, for a bug report (as `hf env`)."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from owlvit_cli.cli.commands.common import DebugOption, JsonOption, examples, make_output
from owlvit_cli.cli.output import run_guarded
from owlvit_cli.cli.render import key_value_grid

HELP = (
    "Print the environment for a bug report: owlvit, Python and platform, the versions of "
    "jax/jaxlib (with the backend and devices jax picks), torch, transformers, huggingface_hub "
    "and safetensors, the Hub endpoint, whether a token is set (never the token) and where "
    "the caches are." + examples("owlvit env", "owlvit env --json | jq .packages")
)


def register(app: typer.Typer) -> None:
    app.command("env", help=HELP, short_help="versions, devices, Hub settings, caches")(env_command)


def env_command(json_mode: JsonOption = False, debug: DebugOption = False) -> None:
    out = make_output(json_mode, debug)

    def action() -> None:
        from owlvit_cli.environment import environment_report

        report = environment_report()
        out.result(report, lambda console: render(console, report))

    run_guarded(out, action)


def render(console: Console, report: dict[str, Any]) -> None:
    table = key_value_grid()
    table.add_row("owlvit", report["owlvit"])
    table.add_row("python", f"{report['python']} ({escape(report['python_executable'])})")
    table.add_row("platform", report["platform"])
    for name, version in report["packages"].items():
        table.add_row(name, version or "[dim]not installed[/dim]")
    jax = report["jax"]
    devices = ", ".join(jax["devices"]) or escape(jax.get("error", "none"))
    table.add_row("jax backend", f"{jax['backend'] or '-'} ({escape(devices)})")
    hub = report["hub"]
    table.add_row("hub endpoint", escape(hub["endpoint"]))
    table.add_row("hub token", f"set ({hub['token']})" if hub["token"] else "not set")
    for name, path in report["caches"].items():
        table.add_row(f"cache: {name}", escape(path))
    console.print(table, soft_wrap=True)
