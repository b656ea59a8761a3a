"""The Typer app. Each command lives in `owlvit_cli.cli.commands` and only parses, calls the core
and renders; heavy libraries (jax, torch, transformers) are imported inside command bodies so
that `owlvit --help` starts instantly."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer import _click as click  # Typer vendors click: its exceptions are the ones raised
from typer._click.exceptions import NoSuchOption, UsageError
from typer._click.types import ParamType
from typer.core import TyperCommand, TyperGroup, TyperOption

from owlvit_cli.cli import process
from owlvit_cli.cli.commands import convert, detect, env, inspect, push, verify, version
from owlvit_cli.cli.commands.common import DANGEROUS_FLAGS, examples
from owlvit_cli.cli.output import stdout_failure, usage_failure
from owlvit_cli.hold import hold_point

PROG_NAME = "owlvit"
# Words users type from habit (`hf env`, `hf upload`) and what owlvit calls them.
COMMAND_HINTS = {"info": "owlvit env", "upload": "owlvit push"}
OPTION_HINTS = {"--output-format": "--json", "--verbose": "--debug"}
JSON_PARAM = "json_mode"  # every command's --json parameter
FORMAT_KEY = "owlvit.format"
FORMATS = ("json", "text")


class OwlvitGroup(TyperGroup):
    """The root command: usage errors go through the one output layer (a JSON error object
    too under --json), and typo suggestions never name a dangerous flag."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            if args and args[0] in COMMAND_HINTS:
                exc.message = (
                    f"No such command {args[0]!r}. Did you mean `{COMMAND_HINTS[args[0]]}`?"
                )
            raise

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            if isinstance(exc, NoSuchOption):
                _safe_suggestions(exc)
            if not standalone_mode:
                raise
            usage_failure(exc, json_mode=process.wants_json(args))
        except typer.Abort:
            if not standalone_mode:
                raise
            usage_failure(click.ClickException("aborted"), json_mode=process.wants_json(args))
        except OSError as exc:  # click's own output (help, version, completions) refused
            if isinstance(exc, BrokenPipeError) or exc.filename is not None:
                raise
            stdout_failure(exc)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


class OwlvitCommand(TyperCommand):
    """A command whose usage line reads as the docs write it: `owlvit convert [OPTIONS] CKPT OUT`
    (Typer would write `{CKPT} {OUT}`), and that takes `--format json` (the `hf` spelling) as
    another way to say `--json`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = [param.name for param in self.params]
        if JSON_PARAM in names:
            self.params.insert(names.index(JSON_PARAM) + 1, _format_option())

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.meta.get(FORMAT_KEY) == "json":
            ctx.params[JSON_PARAM] = True
        return super().invoke(ctx)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


class FormatType(ParamType):
    """`--format`: json or text, as `hf` takes it."""

    name = "format"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if str(value).lower() not in FORMATS:
            self.fail(f"{value!r} is not one of {', '.join(FORMATS)}", param, ctx)
        return str(value).lower()


def _format_option() -> click.Option:
    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        ctx.meta[FORMAT_KEY] = value

    return TyperOption(
        param_decls=["--format"],
        type=FormatType(),
        metavar="[json|text]",
        default=None,
        expose_value=False,
        callback=remember,
        help="'json' is the same as --json (as `hf` spells it); 'text' is the default.",
    )


def _safe_suggestions(exc: NoSuchOption) -> None:
    """A known habit gets its owlvit spelling; when the closest match is a dangerous flag,
    nothing is suggested (the next-closest would only be a stranger guess)."""
    hint = OPTION_HINTS.get(exc.option_name)
    matches = list(exc.possibilities or [])
    if matches and matches[0] in DANGEROUS_FLAGS:
        matches = []
    exc.possibilities = [hint] if hint else [m for m in matches if m not in DANGEROUS_FLAGS]


app = typer.Typer(
    name=PROG_NAME,
    cls=OwlvitGroup,
    help="Convert scenic OWL-ViT / OWLv2 Flax checkpoints to Hugging Face transformers, "
    "prove the conversion numerically, and publish it. `owlvit COMMAND -h` explains each "
    "command; exit codes: 0 success, 1 a check failed, 2 bad input or usage, 3 the Hub or the "
    "network failed, 130 interrupted, 70 a bug."
    + examples(
        "owlvit inspect clip_vit_b32_b0203fc",
        "owlvit convert clip_vit_b32_b0203fc owlvit-b32 --verify",
        "owlvit push owlvit-b32 my-org/owlvit-base-patch32-scenic --dry-run",
        "owlvit detect owlvit-b32 street.jpg --query 'a bus'",
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

for module in (inspect, convert, verify, push, detect, env, version):
    module.register(app)
for info in app.registered_commands:
    info.cls = OwlvitCommand


def _version(value: bool) -> None:
    if value:
        typer.echo(version.version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Root options."""


def main() -> None:
    """The console script: signals first, the app in a worker thread, then the exit work
    (none once a heavy runtime was loaded) and the end of the process (see `process`)."""
    process.install_signal_handlers()
    process.end_after_command()
    code = process.run_command(_run_app)
    hold_point("finished")
    if not process.should_exit_now():
        process.run_exit_functions()
    process.exit_now(code)


def _run_app() -> None:
    hold_point("startup")
    app(prog_name=PROG_NAME)
