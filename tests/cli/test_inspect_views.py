"""inspect's two views, the tree and `--mapping`: `--filter` matches either naming in both,
an empty match is said, and mapping names are never truncated (checked on a rendered
pseudo-terminal) and are plain tab-separated text off a terminal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pyte
import pytest

from owlvit_cli.checkpoint.reader import open_checkpoint
from owlvit_cli.convert.mapping import mapping_rows
from tests.helpers import reference_checkpoint, run_console_script

V1 = reference_checkpoint("v1_release")  # a v1 file: resblocks.N, ln_1/ln_2
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("glob", ["*resblocks.0/attn*", "*resblocks_0/attn*"])
def test_filter_matches_either_naming_in_both_views(cli, glob: str):
    tree = json.loads(cli("inspect", V1, "--filter", glob, "--json").stdout)["params"]
    mapping = json.loads(cli("inspect", V1, "--mapping", "--filter", glob, "--json").stdout)
    rows = mapping["mapping"]
    assert len(tree) == len(rows) == 16  # 2 towers × q/k/v/out × kernel/bias
    assert {r["path"] for r in tree} == {r["source"] for r in rows}
    assert all("resblocks.0/attn" in r["source"] for r in rows)  # the file's own names
    assert all("resblocks_0/attn" in r["name"] for r in rows)  # current scenic names


def test_mapping_rows_filter_on_transformers_names_too():
    with open_checkpoint(V1) as ckpt:
        rows = mapping_rows(ckpt, "*vision_model.encoder.layers.1.mlp.fc1*")
    assert [r["source"] for r in rows] == [
        "optimizer/target/backbone/clip/visual/transformer/resblocks.1/mlp/c_fc/bias",
        "optimizer/target/backbone/clip/visual/transformer/resblocks.1/mlp/c_fc/kernel",
    ]


@pytest.mark.parametrize("mapping", [False, True])
def test_a_filter_that_matches_nothing_says_so(cli, mapping: bool):
    args = ["inspect", V1, "--filter", "*no_such_tensor*", *(["--mapping"] if mapping else [])]
    result = cli(*args)
    assert result.exit_code == 0
    assert "no tensor matches --filter '*no_such_tensor*'" in result.stderr
    assert str(V1) not in result.stdout and "backbone" not in result.stdout  # no empty tree
    assert json.loads(cli(*args, "--json").stdout)["params"] == []


def test_mapping_off_a_terminal_is_tab_separated_full_names():
    proc = run_console_script("inspect", V1, "--mapping")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "source\ttransformers\ttransform"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 3 for row in rows)
    with open_checkpoint(V1) as ckpt:
        expected = mapping_rows(ckpt)
    assert [row[0] for row in rows] == [r["source"] for r in expected]
    assert "…" not in proc.stdout
    assert all(row[2].startswith("ignored: ") for row in rows if row[1] == "-")


def screen_of(args: list[str], columns: int, lines: int = 300) -> list[str]:
    """What a terminal of `columns` shows after running owlvit (pexpect pty, pyte screen)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "owlvit_cli", *args],
        env=env,
        dimensions=(lines, columns),
        encoding="utf-8",
        timeout=120,
    )
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    screen = pyte.Screen(columns, lines)
    pyte.Stream(screen).feed(output.replace("\n", "\r\n"))
    return [line.rstrip() for line in screen.display]


@pytest.mark.parametrize("columns", [120, 80, 260])
def test_mapping_on_a_terminal_never_truncates_names(columns: int):
    glob = "*resblocks.0/attn*"
    display = screen_of(["inspect", str(V1), "--mapping", "--filter", glob], columns)
    text = "\n".join(display)
    assert "…" not in text
    with open_checkpoint(V1) as ckpt:
        rows = mapping_rows(ckpt, glob)
    if columns >= len(rows[0]["source"]) + len(rows[0]["target"]) + 25:  # fits: a table
        for row in rows:
            assert any(row["source"] in line and row["target"] in line for line in display)
    else:  # a block per tensor, each name whole (the terminal may wrap a long one)
        for row in rows:
            assert row["source"] in text.replace("\n", "") or row["source"] in display
            assert row["target"] in text.replace("\n", "")


def test_summary_first_and_repeated_blocks_shown_once():
    proc = run_console_script("inspect", V1)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    first_tensor = next(i for i, line in enumerate(lines) if "backbone" in line)
    assert any("layout" in line for line in lines[:first_tensor])  # the summary comes first
    folded = [line for line in lines if "resblocks.{0..1}  (2 blocks, each as below)" in line]
    assert len(folded) == 2  # one per tower
    assert not any("resblocks.0" in line or "resblocks.1 " in line for line in lines)
    assert sum("c_fc" in line for line in lines) == 2  # each block's tensors shown once
    assert lines[-1].endswith("(2 not shown); --all shows every tensor")
    every = run_console_script("inspect", V1, "--all").stdout
    assert "{" not in every and every.count("c_fc") == 4
    assert every.index("layout") < every.index("backbone")
    assert len(every.splitlines()) > len(lines)


def test_json_is_not_folded():
    folded = run_console_script("inspect", V1, "--json")
    every = run_console_script("inspect", V1, "--all", "--json")
    assert folded.returncode == every.returncode == 0
    assert folded.stdout == every.stdout and "{0..1}" not in folded.stdout
    assert len(json.loads(folded.stdout)["params"]) == 91


def test_a_block_that_differs_is_shown_on_its_own(tmp_path: Path):
    """Blocks fold only with neighbours whose tensors have the same names, shapes and dtypes."""
    from dataclasses import replace

    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.model.tree import nest
    from owlvit_cli.testing.fixtures import random_params, write_checkpoint

    tiny = VARIANTS["v1-tiny"]
    params = random_params(replace(tiny, vision=replace(tiny.vision, num_hidden_layers=5)))
    odd = "backbone/clip/visual/transformer/resblocks_2/mlp/c_fc/kernel"
    params[odd] = params[odd].astype("float16")
    ckpt = write_checkpoint(tmp_path / "ckpt", {"params": nest(params)})
    proc = run_console_script("inspect", ckpt)
    assert proc.returncode == 0, proc.stderr
    blocks = [line.split("── ")[1] for line in proc.stdout.splitlines() if "── resblocks_" in line]
    assert blocks == [
        "resblocks_{0..1}  (2 blocks, each as below)",  # text tower
        "resblocks_{0..1}  (2 blocks, each as below)",
        "resblocks_2",
        "resblocks_{3..4}  (2 blocks, each as below)",
    ]
