"""`owlvit push HF_DIR REPO_ID`: publish a converted directory, with a generated model card."""

from __future__ import annotations

import shlex
from pathlib import Path
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
    examples,
    make_output,
)
from owlvit_cli.cli.output import run_guarded
from owlvit_cli.cli.render import human_bytes
from owlvit_cli.errors import BadInputError
from owlvit_cli.publish.model_card import DEFAULT_LICENSE
from owlvit_cli.publish.names import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from owlvit_cli.publish.hub import PushPlan

HELP = (
    "Upload a directory written by `owlvit convert` to a Hub model repo, in one commit. "
    "The repo is created if missing (public unless --private, or an organization's "
    "default).\n\n"
    "Only the model's own files are uploaded (weights, config, tokenizer and processor files, "
    "the conversion and verification records, README.md); --include/--exclude change that, "
    "and every file left out is listed by --dry-run. The directory is checked complete "
    "before the first request. Nothing is read from outside HF_DIR: a symlink that leads "
    "out of it (or a model file that leads to a hidden one) is refused.\n\n"
    "The upload gets a README.md model card: license, tags, pipeline and library metadata, "
    "the source checkpoint and its sha256 (from owlvit_conversion.json), the derived config, "
    "the verify results (from owlvit_verification.json; without it the card says plainly that "
    "the conversion was not verified) and a usage snippet.\n\n"
    "HF_DIR is never modified unless you pass --save-card: the card is generated "
    "in memory and only uploaded. An existing HF_DIR/README.md is uploaded as-is unless "
    "--overwrite-card.\n\n"
    "Token: --token, else HF_TOKEN, else the one stored by `hf auth login`; it is never "
    "printed. Endpoint: --endpoint, else HF_ENDPOINT, else https://huggingface.co.\n\n"
    "Exit codes: 0 pushed (or nothing changed), 1 owlvit_verification.json records a FAILED "
    "verification (without --force), 2 not a complete converted directory or a bad option, "
    "3 the Hub or the network failed (401, 403, 404, 409, 5xx, refused, timed out)."
    + examples(
        "owlvit push owlvit-b32 my-org/owlvit-base-patch32-scenic --dry-run",
        "HF_TOKEN=hf_... owlvit push owlvit-b32 my-org/owlvit-base-patch32-scenic --private",
        "owlvit push owlvit-b32 my-org/owlvit-base-patch32-scenic --create-pr --json",
    )
)


def register(app: typer.Typer) -> None:
    app.command("push", help=HELP, short_help="upload to the Hugging Face Hub with a model card")(
        push_command
    )


def push_command(
    hf_dir: HFDirArg,
    repo_id: Annotated[
        str,
        typer.Argument(
            metavar="REPO_ID",
            help="Target model repo, OWNER/NAME, or NAME for the token's own user.",
            show_default=False,
        ),
    ],
    private: Annotated[
        bool | None,
        typer.Option(
            "--private/--no-private",
            help="Create the repo private (--private) or public (--no-private); refuses to push "
            "into an existing repo of the other kind. Default: the Hub's default for a new "
            "repo (public, unless an organization says otherwise), any existing repo as it is.",
            show_default=False,
        ),
    ] = None,
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
        typer.Option(
            "--create-pr",
            help="Open a pull request against main instead of committing to it (the Hub opens "
            "pull requests against main only, so not with --revision).",
        ),
    ] = False,
    commit_message: Annotated[
        str | None,
        typer.Option(
            "--commit-message",
            metavar="TEXT",
            help="Commit title. Default names the model and the source checkpoint.",
        ),
    ] = None,
    commit_description: Annotated[
        str | None,
        typer.Option(
            "--commit-description",
            metavar="TEXT",
            help="Commit (or pull request) description. Default names the source checkpoint "
            "and its sha256.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="Hub token with write access. Prefer HF_TOKEN: arguments are visible to "
            "other local users.",
            show_default=False,
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            metavar="URL",
            help="Hub URL. Default: HF_ENDPOINT, else https://huggingface.co.",
        ),
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
        typer.Option(
            "--license",
            metavar="LICENSE_ID",
            help=f"License id for the card's metadata. Default: {DEFAULT_LICENSE}, the license "
            "of the released weights.",
            show_default=False,
        ),
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
            help="Push even without (or with an unusable) owlvit_conversion.json, or with a "
            "FAILED verification (the card then says so). Other checks still apply.",
        ),
    ] = False,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            metavar="PATTERN",
            help="Also upload files matching PATTERN (as `hf upload`; repeatable). By default "
            "only the model's own files go; hidden files only when PATTERN names them "
            "(e.g. '.env').",
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", metavar="PATTERN", help="Do not upload files matching PATTERN."),
    ] = None,
    delete: Annotated[
        list[str] | None,
        typer.Option(
            "--delete",
            metavar="PATTERN",
            help="Delete remote files matching PATTERN in the same commit (not the ones "
            "uploaded, never .gitattributes).",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            metavar="SECONDS",
            help="Seconds to wait for the Hub on each request.",
        ),
    ] = DEFAULT_TIMEOUT,
    json_mode: JsonOption = False,
    debug: DebugOption = False,
    quiet: QuietOption = False,
) -> None:
    out = make_output(json_mode, debug, quiet)

    def action() -> None:
        from owlvit_cli.publish import hub
        from owlvit_cli.publish.secrets import resolve_token

        check_argument_order(hf_dir, repo_id)
        plan = hub.plan_push(
            hf_dir,
            repo_id,
            revision=revision,
            create_pr=create_pr,
            private=private,
            license_=license_,
            overwrite_card=overwrite_card,
            commit_message=commit_message,
            commit_description=commit_description,
            force=force,
            endpoint=endpoint,
            include=include or (),
            exclude=exclude or (),
            delete=delete or (),
        )
        # Everything the checks found is said before the first request.
        for warning in plan.warnings:
            out.warn(escape(warning))
        if dry_run:
            out.result(hub.result_payload(plan, None), lambda c: render_dry_run(c, plan))
            return

        secret = resolve_token(token)
        plan = hub.resolve_namespace(plan, token=secret, timeout=timeout, debug=debug)
        if save_card and (path := hub.save_card(plan)) is not None:
            out.info(f"wrote the model card to {escape(str(path))}")
        result = hub.push(plan, token=secret, timeout=timeout, debug=debug, progress=out)
        for warning in result.warnings:
            out.warn(escape(warning))
        payload = hub.result_payload(plan, result)
        out.result(payload, lambda console: render_result(console, payload))

    run_guarded(out, action)


def check_argument_order(hf_dir: Path, repo_id: str) -> None:
    """`hf upload` takes REPO_ID first; say so when the arguments look swapped rather than
    report a missing directory named like a repo."""
    if not hf_dir.exists() and Path(repo_id).is_dir():
        raise BadInputError(
            f"HF_DIR {str(hf_dir)!r} does not exist, but REPO_ID {repo_id!r} is a directory: "
            f"the arguments look swapped; owlvit takes HF_DIR first: "
            f"owlvit push {shlex.quote(repo_id)} {shlex.quote(str(hf_dir))}"
        )


VISIBILITY = {True: " as a private repo", False: " as a public repo"}


def _target(repo_id: str, revision: str, endpoint: str) -> str:
    return f"{repo_id}@{revision} on {endpoint}"


def render_dry_run(console: Console, plan: PushPlan) -> None:
    table = Table("file", "size", "from", title="would upload (dry run)", title_justify="left")
    for upload in plan.files:
        table.add_row(escape(upload.path_in_repo), human_bytes(upload.size), upload.source)
    console.print(table)
    if plan.left_out:
        left_out = Table("file", "why", title="left out", title_justify="left")
        for item in plan.left_out:
            left_out.add_row(escape(item.path), escape(item.reason))
        console.print(left_out)
    action = "open a pull request on" if plan.create_pr else "commit to"
    branch = " (creating the branch if missing)" if plan.creates_branch else ""
    target = _target(plan.shown_repo_id, plan.revision, plan.shown_endpoint)
    console.print(
        f"{len(plan.files)} files, {human_bytes(plan.total_size)}: would {action} "
        f"{escape(target)}{branch}" + VISIBILITY.get(plan.private, ""),
        soft_wrap=True,
    )
    if plan.delete:
        patterns = ", ".join(plan.delete)
        console.print(f"would delete remote files matching: {escape(patterns)}", soft_wrap=True)
    console.print(f"commit message: {escape(plan.commit_message)}", soft_wrap=True)
    if plan.card_text is not None:
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
            f"nothing uploaded: {target} already has every file, with the same content"
            + ("; no pull request opened" if payload["create_pr"] else ""),
            soft_wrap=True,
        )
    else:
        size = human_bytes(sum(row["size"] for row in uploaded))
        console.print(
            f"pushed {len(uploaded)} of {len(payload['files'])} files ({size}) to {target}",
            soft_wrap=True,
        )
    if payload["deleted"]:
        console.print(f"deleted: {escape(', '.join(payload['deleted']))}", soft_wrap=True)
    console.print(f"repo: {payload['repo_url']}", soft_wrap=True, markup=False)
    if payload["pr_url"]:
        console.print(f"pull request: {payload['pr_url']}", soft_wrap=True, markup=False)
    else:
        console.print(f"commit: {payload['commit_url']}", soft_wrap=True, markup=False)
