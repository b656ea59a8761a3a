"""Conventions users bring from `hf`: -h, examples, metavars, choices, completion, `env`,
typo suggestions that never name a dangerous flag, and a hint for swapped push arguments."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from owlvit_cli.cli.commands.common import DANGEROUS_FLAGS
from tests.helpers import run_console_script

COMMANDS = ("inspect", "convert", "verify", "push", "detect", "env", "version")
USAGE = {
    "inspect": "owlvit inspect [OPTIONS] CKPT",
    "convert": "owlvit convert [OPTIONS] CKPT OUT",
    "verify": "owlvit verify [OPTIONS] CKPT HF_DIR",
    "push": "owlvit push [OPTIONS] HF_DIR REPO_ID",
    "detect": "owlvit detect [OPTIONS] HF_DIR IMAGE",
    "env": "owlvit env [OPTIONS]",
    "version": "owlvit version [OPTIONS]",
}


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_dash_h_everywhere_with_examples(cli, command: str):
    result = cli(*([command] if command else []), "-h")
    assert result.exit_code == 0, result.stderr
    assert re.search(r"\n  Examples:\n(    owlvit .+\n)+", result.stdout), result.stdout
    assert "-h, --help" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_usage_lines_use_the_readme_metavars(cli, command: str):
    text = cli(command, "--help").stdout
    assert f"Usage: {USAGE[command]}\n" in text
    assert not re.search(r"<[a-z ]+>|\{[a-z_]+\}", text), text  # no <str>, <int range>, {hf_dir}


def test_root_help_lists_every_command_uncut(cli):
    text = cli("--help").stdout
    commands = text.split("Commands:\n", 1)[1]
    for command in COMMANDS:
        assert re.search(rf"^  {command} +\S", commands, re.M)
    assert "..." not in commands


def test_enumerated_option_shows_its_choices(cli):
    text = cli("convert", "-h").stdout
    assert "--dtype [auto|float32|float16|bfloat16]" in text
    verify = cli("verify", "-h").stdout
    assert "--atol NAME=VALUE" in verify and "pred_boxes" in verify


def test_push_help_says_what_the_code_does(cli, tmp_path: Path):
    text = " ".join(cli("push", "-h").stdout.split())
    assert "[bold]" not in text and "HF_DIR is never modified" in text
    assert "(apache-2.0)" not in text and "Default: apache-2.0" in text
    assert "against main" in text and "against --revision" not in text
    # ...and the code does refuse --revision with --create-pr, as the help says.
    result = cli("push", tmp_path, "o/n", "--revision", "dev", "--create-pr", "--dry-run")
    assert result.exit_code == 2 and "against main" in result.stderr


def test_detect_query_has_no_short_form(cli, tmp_path: Path):
    help_text = cli("detect", "-h").stdout
    assert "-q, --quiet" in help_text and "-q, --query" not in help_text
    result = cli("detect", tmp_path, tmp_path / "x.png", "-q", "a cat")
    # -q is --quiet, so "a cat" is an extra argument, never a query.
    assert result.exit_code == 2
    assert "unexpected extra argument" in result.stderr


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("push", "--force"),
        ("push", "--overwrite-card"),
        ("push", "--save-card"),
        ("convert", "--overwrite"),
    ],
)
def test_typo_suggestions_never_name_a_dangerous_flag(cli, tmp_path: Path, command, flag):
    assert flag in DANGEROUS_FLAGS
    for typo in (flag[:-1], flag + "s", flag[:4] + flag[5:]):
        result = cli(command, tmp_path, "o/n", typo)
        assert result.exit_code == 2 and f"No such option: {typo}" in result.stderr
        assert flag not in result.stderr.replace(f"No such option: {typo}", "")


def test_habits_get_owlvit_spellings(cli, tmp_path: Path):
    result = cli("push", tmp_path, "o/n", "--output-format", "json")
    assert "(Possible options: --json)" in result.stderr and "--force" not in result.stderr
    result = cli("info")
    assert result.exit_code == 2 and "Did you mean `owlvit env`?" in result.stderr


def test_version_is_a_command_too():
    from owlvit_cli import __version__

    flag = run_console_script("--version")
    command = run_console_script("version")
    assert flag.returncode == command.returncode == 0
    assert command.stdout == flag.stdout == f"owlvit {__version__}\n"
    for spelling in (["--json"], ["--format", "json"]):
        result = run_console_script("version", *spelling)
        assert result.returncode == 0 and json.loads(result.stdout) == {"version": __version__}


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "{missing}"],
        ["convert", "{missing}", "{tmp}/out"],
        ["verify", "{missing}", "{tmp}"],
        ["push", "{missing}", "o/n", "--dry-run"],
        ["detect", "{missing}", "{missing}.png", "--query", "a cat"],
        ["env"],
        ["version"],
    ],
    ids=lambda args: args[0],
)
@pytest.mark.parametrize("spelling", [["--format", "json"], ["--format=json"]])
def test_format_json_is_json_on_every_command(tmp_path: Path, args, spelling) -> None:
    """`hf`'s spelling: one JSON object on stdout, the same one --json prints."""
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path) for a in args]
    as_format = run_console_script(*args, *spelling)
    as_json = run_console_script(*args, "--json")
    assert as_format.returncode == as_json.returncode, as_format.stderr
    payload = json.loads(as_format.stdout)  # exactly one JSON document
    if as_json.returncode:
        assert payload == json.loads(as_json.stdout) and payload["error"]["code"] == 2
    else:
        assert set(payload) == set(json.loads(as_json.stdout))
    text = run_console_script(*args, "--format", "text")
    assert text.returncode == as_json.returncode and not text.stdout.lstrip().startswith("{")


def test_swapped_push_arguments_get_a_hint(tmp_path: Path):
    hf_dir = tmp_path / "out" / "model"
    hf_dir.mkdir(parents=True)
    proc = run_console_script("push", "my-org/model", hf_dir, "--dry-run")  # hf upload's order
    assert proc.returncode == 2
    assert "look swapped" in proc.stderr and f"owlvit push {hf_dir} my-org/model" in proc.stderr
    proc = run_console_script("push", tmp_path / "missing", "my-org/model", "--dry-run")
    assert proc.returncode == 2 and "look swapped" not in proc.stderr  # no hint, no reason


def test_convert_accepts_dtype_aliases(cli, tiny_checkpoint, tmp_path: Path):
    from owlvit_cli.convert.run import convert_checkpoint

    result = convert_checkpoint(tiny_checkpoint(), tmp_path / "api", dtype="bf16")
    assert result.to_json()["dtype"] == "bfloat16"
    record = json.loads((tmp_path / "api" / "owlvit_conversion.json").read_text())
    assert record["dtype"] == "bfloat16"
    cli_result = cli("convert", tiny_checkpoint(), tmp_path / "cli", "--dtype", "fp16", "--json")
    assert cli_result.exit_code == 0, cli_result.stderr
    assert json.loads(cli_result.stdout)["dtype"] == "float16"


def complete(shell_env: dict[str, str]) -> list[str]:
    proc = run_console_script(env={"_OWLVIT_COMPLETE": "complete_bash", **shell_env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_of_commands_paths_dtype_and_atol(tmp_path: Path):
    (tmp_path / "ckpt_b32").write_bytes(b"")
    (tmp_path / "ckpt_dir").mkdir()
    (tmp_path / "other").write_bytes(b"")

    def words(line: str) -> list[str]:
        return complete({"COMP_WORDS": line, "COMP_CWORD": str(len(line.split()) - 1)})

    assert words("owlvit con") == ["convert"]
    assert words(f"owlvit convert {tmp_path}/ckpt") == [
        f"{tmp_path}/ckpt_b32",
        f"{tmp_path}/ckpt_dir/",
    ]
    assert words(f"owlvit verify x {tmp_path}/ckpt") == [f"{tmp_path}/ckpt_dir/"]  # HF_DIR
    assert words("owlvit convert a b --dtype bf") == ["bfloat16", "bf16"]
    assert words("owlvit verify a b --atol pred_b") == ["pred_boxes="]


def test_completion_in_a_directory_with_a_symlink_loop(tmp_path: Path):
    """`ln -s loop loop`, `a -> b -> a`: completed as plain names, no traceback in the shell."""
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "ckpt").write_bytes(b"")
    for line, want in [
        (f"owlvit inspect {tmp_path}/", ["a", "b", "ckpt", "loop"]),
        (f"owlvit verify x {tmp_path}/", []),  # HF_DIR: directories only
    ]:
        proc = run_console_script(
            env={
                "_OWLVIT_COMPLETE": "complete_bash",
                "COMP_WORDS": line,
                "COMP_CWORD": str(len(line.split()) - 1),
            }
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert proc.stdout.split() == [f"{tmp_path}/{name}" for name in want]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_scripts(shell: str):
    """Typer takes the shell named here only when it does not detect one from the process
    tree (which has no shell above a detached CI job); the switch makes the run independent of
    what started the tests."""
    env = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    proc = run_console_script("--show-completion", shell, env=env)
    assert proc.returncode == 0 and "_OWLVIT_COMPLETE" in proc.stdout, proc.stderr


def test_zsh_and_fish_complete_dtype_names():
    args = "owlvit convert a b --dtype fp"
    zsh = run_console_script(
        env={"_OWLVIT_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": args}
    ).stdout
    assert '"fp32"' in zsh and '"fp16"' in zsh
    fish = run_console_script(
        env={
            "_OWLVIT_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_ARGS": args,
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
        }
    ).stdout
    assert fish.split() == ["fp32", "fp16"]


def test_env_reports_facts_and_never_the_token(tmp_path: Path):
    secret = "hf_thisIsNotARealTokenButMustNeverBePrinted"
    env = {"HF_TOKEN": secret, "HF_ENDPOINT": "https://hub.example.test", "OWLVIT_CACHE": "/c/o"}
    proc = run_console_script("env", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["owlvit"] and report["python"] and report["platform"]
    for name in ("jax", "jaxlib", "torch", "transformers", "huggingface_hub", "safetensors"):
        assert report["packages"][name], name
    assert report["jax"]["backend"] and report["jax"]["devices"]
    assert report["hub"] == {"endpoint": "https://hub.example.test", "token": "HF_TOKEN"}
    assert report["caches"]["owlvit"] == "/c/o" and report["caches"]["huggingface_hub"]
    human = run_console_script("env", env=env)
    assert human.returncode == 0 and "hub.example.test" in human.stdout
    for text in (proc.stdout, proc.stderr, human.stdout, human.stderr):
        assert secret not in text and secret[3:12] not in text


def test_env_without_a_token(tmp_path: Path):
    env = {"HF_TOKEN": "", "HF_HOME": str(tmp_path), "HF_TOKEN_PATH": str(tmp_path / "none")}
    report = json.loads(run_console_script("env", "--json", env=env).stdout)
    assert report["hub"]["token"] is None
    assert report["caches"]["hf_home"] == str(tmp_path)
