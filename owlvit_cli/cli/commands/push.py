"""`owlvit push HF_DIR REPO_ID`: publish a converted directory, with a generated model card."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from owlvit_cli.cli.commands.common import (
    DebugOption,
    HFDirArg,
    JsonOption,
    QuietOption,
    make_output,
)
from owlvit_cli.cli.output import run_guarded
from owlvit_cli.cli.render import human_bytes

if TYPE_CHECKING:
    from owlvit_cli.publish.hub import PushPlan

HELP = (
    "Upload a directory written by `owlvit convert` to a Hub model repo, in one commit. "
    "The repo is created if missing (public unless --private).\n\n"
    "The upload gets a README.md model card: license, tags, pipeline and library metadata, "
    "the source checkpoint and its sha256 (from owlvit_conversion.json), the derived config, "
    "the verify results (from owlvit_verification.json; without it the card says plainly that "
    "the conversion was not verified) and a usage snippet.\n\n"
    "[bold]HF_DIR is never modified[/bold] unless you pass --save-card: the card is generated "
    "in memory and only uploaded. An existing HF_DIR/README.md is uploaded as-is unless "
    "--overwrite-card.\n\n"
    "Token: --token, else HF_TOKEN, else the one stored by `hf auth login`; it is never "
    "printed. Endpoint: --endpoint, else HF_ENDPOINT, else https://huggingface.co.\n\n"
    "Exit codes: 0 pushed (or nothing changed), 2 not a converted directory or a bad option, "
    "3 the Hub or the network failed (401, 403, 404, 409, 5xx, refused, timed out)."
)


def register(app: typer.Typer) -> None:
    app.command("push", help=HELP)(push_command)


def push_command(
    hf_dir: HFDirArg,
    repo_id: Annotated[str, typer.Argument(help="Target model repo, OWNER/NAME.")],
    private: Annotated[
        bool,
        typer.Option(
            "--private",
            help="Create the repo private. Refuses to push if it already exists and is public.",
        ),
    ] = False,
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision",
            metavar="BRANCH",
            help="Branch to commit to (created from main if missing), or refs/pr/N to add to "
            "an open pull request. Default: main.",
        ),
    ] = None,
    create_pr: Annotated[
        bool,
        typer.Option("--create-pr", help="Open a pull request (against --revision) instead."),
    ] = False,
    commit_message: Annotated[
        str | None,
        typer.Option("--commit-message", help="Commit title. Default names model and source."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Hub token with write access. Prefer HF_TOKEN: arguments are visible to "
            "other local users.",
            show_default=False,
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the files, sizes and card that would be uploaded; no network access, "
            "no token needed, nothing written.",
        ),
    ] = False,
    license_: Annotated[
        str | None,
        typer.Option("--license", help="License id for the card.", show_default="apache-2.0"),
    ] = None,
    overwrite_card: Annotated[
        bool,
        typer.Option(
            "--overwrite-card", help="Replace an existing HF_DIR/README.md in the upload."
        ),
    ] = False,
    save_card: Annotated[
        bool,
        typer.Option("--save-card", help="Also write the generated card to HF_DIR/README.md."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Push even without (or with an unusable) owlvit_conversion.json. Other checks "
            "still apply.",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.1, help="Seconds to wait for the Hub on each request."),
    ] = 60.0,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
    quiet: QuietOption = False,
) -> None:
    out = make_output(json_mode, debug, quiet)

    def action() -> None:
        from owlvit_cli.publish import hub

        plan = hub.plan_push(
            hf_dir,
            repo_id,
            revision=revision,
            create_pr=create_pr,
            private=private,
            license_=license_,
            overwrite_card=overwrite_card,
            commit_message=commit_message,
            force=force,
            endpoint=endpoint,
        )
        if dry_run:
            for warning in plan.warnings:
                out.warn(escape(warning))
            out.result(hub.result_payload(plan, None), lambda c: render_dry_run(c, plan))
            return

        secret = hub.resolve_token(token)
        if save_card and (path := hub.save_card(plan)) is not None:
            out.info(f"wrote the model card to {escape(str(path))}")

        def before_upload() -> None:  # what the card will say, before it is published
            for warning in plan.warnings:
                out.warn(escape(warning), now=True)

        result = hub.push(
            plan,
            token=secret,
            timeout=timeout,
            debug=debug,
            progress=out,
            before_upload=before_upload,
        )
        for warning in result.warnings:
            out.warn(escape(warning))
        payload = hub.result_payload(plan, result)
        out.result(payload, lambda console: render_result(console, payload))

    run_guarded(out, action)


def _target(repo_id: str, revision: str, endpoint: str) -> str:
    return f"{repo_id}@{revision} on {endpoint}"


def render_dry_run(console: Console, plan: PushPlan) -> None:
    table = Table("file", "size", "from", title="would upload (dry run)", title_justify="left")
    for upload in plan.files:
        table.add_row(escape(upload.path_in_repo), human_bytes(upload.size), upload.source)
    console.print(table)
    action = "open a pull request on" if plan.create_pr else "commit to"
    branch = " (creating the branch if missing)" if plan.creates_branch else ""
    console.print(
        f"{len(plan.files)} files, {human_bytes(plan.total_size)}: would {action} "
        f"{escape(_target(plan.repo_id, plan.revision, plan.endpoint))}{branch}"
        + (" as a private repo" if plan.private else ""),
        soft_wrap=True,
    )
    console.print(f"commit message: {escape(plan.commit_message)}", soft_wrap=True)
    console.rule(f"README.md ({plan.card_source})")
    console.print(plan.card_text, markup=False, highlight=False, soft_wrap=True)


def render_result(console: Console, payload: dict[str, Any]) -> None:
    table = Table("file", "size", "storage", "status", title_justify="left")
    for row in payload["files"]:
        name = escape(row["path"]) + (" (generated)" if row["source"] == "generated" else "")
        table.add_row(name, human_bytes(row["size"]), row["storage"] or "", row["status"])
    console.print(table)
    uploaded = [row for row in payload["files"] if row["status"] == "uploaded"]
    target = escape(_target(payload["repo_id"], payload["revision"], payload["endpoint"]))
    if not payload["changed"]:
        console.print(
            f"nothing changed: {target} already has these files"
            + ("; no pull request opened" if payload["create_pr"] else ""),
            soft_wrap=True,
        )
    else:
        size = human_bytes(sum(row["size"] for row in uploaded))
        console.print(
            f"pushed {len(uploaded)} of {len(payload['files'])} files ({size}) to {target}",
            soft_wrap=True,
        )
    if payload["pr_url"]:
        console.print(f"pull request: {payload['pr_url']}", soft_wrap=True, markup=False)
    else:
        console.print(f"commit: {payload['commit_url']}", soft_wrap=True, markup=False)
