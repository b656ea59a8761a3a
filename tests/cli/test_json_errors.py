"""The CI contract: with --json, every failure is one JSON object on stdout,
`{"error": {"code", "kind", "message"}}`, with the same exit code; usage errors too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import json_error, only_json_object, run_console_script

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "kind", "says"),
    [
        (["push", "x", "my/y", "--format", "yaml"], "usage", "'yaml' is not one of json, text"),
        (["push", "x", "my/y", "--formats", "json"], "usage", "No such option: --formats"),
        (["inspect"], "usage", "Missing argument 'CKPT'"),
        (["convert", "a", "b", "--dtype", "fp17"], "usage", "'fp17' is not one of"),
        (["versoin"], "usage", "No such command 'versoin'"),
        (["inspect", "--depth", "0", "x"], "usage", "--depth"),
        (["inspect", "/nonexistent/ckpt"], "checkpoint", "no such file"),
    ],
)
def test_failure_is_one_json_error_object(cli, args: list[str], kind: str, says: str):
    result = cli(*args, "--json")
    assert result.exit_code == 2
    error = json_error(result.stdout, 2)
    assert error["kind"] == kind
    assert says in error["message"]
    assert says in result.stderr  # the human line is still there for the log


def test_without_json_a_failure_leaves_stdout_empty(cli):
    result = cli("push", "x", "my/y", "--format", "yaml")
    assert result.exit_code == 2 and result.stdout == ""
    result = cli("inspect", "/nonexistent/ckpt")
    assert result.exit_code == 2 and result.stdout == ""


def test_json_after_double_dash_is_an_argument_not_the_flag(cli, tmp_path: Path):
    result = cli("inspect", "--", "--json")
    assert result.exit_code == 2 and result.stdout == ""


def test_console_script_usage_error_json():
    proc = run_console_script("convert", "a", "b", "--overwrit", "--json")
    assert proc.returncode == 2
    assert only_json_object(proc.stdout)["error"]["kind"] == "usage"


def test_verify_mismatch_adds_the_error_member(tiny_checkpoint, converted):
    """A failed check keeps its report and adds `error`, so `.error.code` is 1 there too."""
    ckpt = tiny_checkpoint("v1-tiny", "current")
    proc = run_console_script("verify", ckpt, converted(ckpt), "--atol", "pred_logits=0", "--json")
    assert proc.returncode == 1, proc.stderr
    report = only_json_object(proc.stdout)
    assert report["passed"] is False and "stock/pred_logits" in report["failed"]
    assert report["error"]["code"] == 1 and report["error"]["kind"] == "check_failed"
    assert "pred_logits" in report["error"]["message"]


CI_SCRIPT = r"""
set -euo pipefail
owlvit() { "$OWLVIT_PYTHON" -m owlvit_cli "$@"; }

# expect CODE KIND ARGS...: run `owlvit ARGS... --json` and branch on the error object.
expect() {
    local want_code=$1 want_kind=$2
    shift 2
    local out code=0
    out=$(owlvit "$@" --json 2>/dev/null) || code=$?
    [ "$(jq -s length <<<"$out")" = 1 ]                # exactly one JSON object
    case "$(jq .error.code <<<"$out")" in
        "$want_code") ;;
        *) echo "unexpected .error.code for $*: $out"; exit 1 ;;
    esac
    [ "$code" = "$want_code" ] || { echo "exit $code for $*"; exit 1; }
    [ "$(jq -r .error.kind <<<"$out")" = "$want_kind" ] || { echo "kind: $out"; exit 1; }
    echo "ok $want_code $want_kind: $*"
}

expect 2 usage     push "$HF_DIR" my-org/model --format yaml
expect 2 usage     convert "$CKPT" "$WORK/o" --dtype fp17
expect 2 usage     versoin
expect 2 checkpoint inspect "$WORK/missing"
expect 2 checkpoint convert "$WORK/missing" "$WORK/o"
expect 2 bad_input push my-org/model "$HF_DIR"                       # hf upload's order
expect 2 bad_input push "$HF_DIR" my-org/model --revision dev --create-pr --dry-run
expect 3 hub       push "$HF_DIR" my-org/model --token hf_x --endpoint http://127.0.0.1:9
expect 2 checkpoint inspect "$BAD"                                   # the report, and why
# success: the same script reads results; fp16 is a --dtype alias
owlvit convert "$CKPT" "$WORK/half" --dtype fp16 --json | jq -e '.dtype == "float16"' >/dev/null
[ "$(owlvit inspect "$CKPT" --json | jq -r .error.code)" = null ]
echo done
"""


def test_ci_script_branches_on_error_code(tiny_checkpoint, converted, tmp_path: Path):
    """A `set -euo pipefail` CI step branches on `jq .error.code` for every failure #17 names
    (jq is a test dependency here; the CI image has it at /usr/bin/jq)."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    ckpt = tiny_checkpoint("v1-tiny", "current")
    script = tmp_path / "ci.sh"
    script.write_text(textwrap.dedent(CI_SCRIPT))
    env = {
        **os.environ,
        "OWLVIT_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO_ROOT),
        "CKPT": str(ckpt),
        "HF_DIR": str(converted(ckpt)),
        "BAD": str(_checkpoint_missing_a_tensor(tmp_path)),
        "WORK": str(tmp_path),
        "HF_HUB_OFFLINE": "0",
    }
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") == 9 and proc.stdout.rstrip().endswith("done")


def _checkpoint_missing_a_tensor(tmp_path: Path) -> Path:
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.testing.fixtures import checkpoint_tree, random_params, write_checkpoint

    params = random_params(VARIANTS["v1-tiny"])
    del params["class_head/logit_scale/bias"]
    return write_checkpoint(tmp_path / "missing_tensor", checkpoint_tree(params))


def test_inspect_of_a_checkpoint_with_problems_has_the_error_member(tmp_path: Path):
    """The report and its problems, and `.error.code` 2 as the exit code, so `jq .error.code`
    does not read a refused checkpoint as a success."""
    proc = run_console_script("inspect", _checkpoint_missing_a_tensor(tmp_path), "--json")
    assert proc.returncode == 2, proc.stderr
    report = only_json_object(proc.stdout)
    assert report["problems"] and report["params"]
    assert report["error"] == {
        "code": 2,
        "kind": "checkpoint",
        "message": "1 problem(s): convert would refuse this checkpoint",
    }


def test_a_non_zero_exit_adds_the_error_member_to_a_json_result(capsys):
    """Whatever the command: its result under --json gets the error object of its exit code,
    with the last error line as the message, unless it carries one already."""
    from owlvit_cli.cli.output import Output, run_guarded

    out = Output(json_mode=True)

    def action() -> int:
        out.result({"answer": 42}, lambda console: None)
        out.error("the answer is wrong")
        return 1

    with pytest.raises(SystemExit) as exit_:
        run_guarded(out, action)
    assert exit_.value.code == 1
    assert only_json_object(capsys.readouterr().out) == {
        "answer": 42,
        "error": {"code": 1, "kind": "check_failed", "message": "the answer is wrong"},
    }
