"""Every command line README.md and docs/*.md show runs, exactly as written.

Each page runs top to bottom in a directory of its own, as a reader following it would, with
small stand-ins for the files the docs name: tiny random checkpoints under the released
names, `street.jpg`, a training `workdir/`, and (except where the page converts them itself)
the converted `owlvit-b32/` and `owlv2-b16/`. `owlvit` is the venv's console script on PATH,
and a local Hub server answers `push`.

A block the stand-ins cannot run (a download, an install) says why in a comment right above
it: `<!-- not run: REASON -->`. `<!-- exits N -->` gives the exit code the block's last
command must have. In a `console` block the `$` lines run and the lines under each must
appear in its output, `…` standing for anything.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from owlvit_cli.testing.demo import NEXT_STEPS
from tests.helpers import SAMPLE
from tests.hub_server import HubServer, HubState

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"bash", "console", "python"}
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*(not run|exits)\s*:?\s*(.*?)\s*-->$")
COMMAND_LINE = re.compile(r"^\s*(\$ )?owlvit\s")
TOKEN = "hf_docs_token"

# Stand-ins: (variant, layout, seed) of the tiny checkpoint written under each released name.
CHECKPOINTS = {
    "clip_vit_b32_b0203fc": ("v1-tiny", "v1", 0),
    "clip_vit_l14_d83d374": ("v1-tiny", "v1", 1),
    "owl2-b16-960-st-ngrams_c7e1b9a": ("v2-tiny", "v2", 0),
    "workdir/checkpoint_1000": ("v1-tiny", "current", 2),
    "workdir/checkpoint_5000": ("v1-tiny", "current", 3),
}
CONVERTED = {"owlvit-b32": "clip_vit_b32_b0203fc", "owlv2-b16": "owl2-b16-960-st-ngrams_c7e1b9a"}
# Pages that convert these themselves, so they start from the downloaded checkpoints alone.
STARTS_UNCONVERTED = {"README.md", "convert.md"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    not_run: str | None  # the reason, when marked
    exits: int

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.lang or 'plain'} block)"


def blocks(page: Path) -> Iterator[Block]:
    """The fenced blocks of a page, with the marker on the line above each (if any)."""
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.match(lines[index - 1].strip()) if index else None
        kind, value = marker.groups() if marker else ("", "")
        yield Block(
            page=page,
            line=index + 1,
            lang=fence.group(1),
            text="\n".join(lines[index + 1 : end]) + "\n",
            not_run=value if kind == "not run" else None,
            exits=int(value) if kind == "exits" else 0,
        )
        index = end + 1


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in RUNNABLE and b.not_run is None]


def test_every_command_line_is_run_or_says_why_not():
    problems = []
    for page in PAGES:
        for block in blocks(page):
            commands = [line for line in block.text.splitlines() if COMMAND_LINE.match(line)]
            if block.lang not in RUNNABLE and commands:
                problems.append(f"{block}: command lines belong in a bash or console block")
            if block.not_run is not None and not block.not_run:
                problems.append(f"{block}: `not run` needs a reason")
    assert not problems, "\n".join(problems)
    assert sum(len(runnable(page)) for page in PAGES) >= 20


def test_readme_puts_install_walkthrough_and_commands_first():
    """A newcomer finds them on the first two screens; the rest lives in docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    headings = {line: number for number, line in enumerate(lines) if line.startswith("## ")}
    assert headings["## Install"] < headings["## Commands"] < 110
    walkthrough = [b.text for b in blocks(ROOT / "README.md") if b.lang == "bash"]
    shown = [line for text in walkthrough for line in text.splitlines()]
    assert [line for line in shown if line in NEXT_STEPS] == list(NEXT_STEPS)


def anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_pages_lead_somewhere():
    broken = []
    for page in [*PAGES, ROOT / "bench" / "README.md"]:
        for target, fragment in re.findall(
            r"\]\((?!https?:)([^)#\s]*)#?([^)\s]*)\)", page.read_text()
        ):
            linked = (page.parent / target).resolve() if target else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} does not exist")
            elif fragment and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
                if fragment not in {anchor(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: no heading #{fragment} in {target}")
    assert not broken, "\n".join(broken)


def test_docs_and_code_cite_no_readme_section_spec_paragraph_or_issue():
    """Each text states what holds now; nothing points at a section that may move."""
    pattern = re.compile("README" + r'[ :]+("|measured|§)|spec ' + "§" + r"|\bissue \d")
    files = [p for p in PAGES if p.name != "owlvit-spec.md"]  # the spec numbers its own parts
    files += [ROOT / "bench" / "README.md", ROOT / "Makefile"]
    for package in ("owlvit_cli", "bench", "tests"):
        files += (ROOT / package).rglob("*.py")
    cited = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not cited, "\n".join(cited)


# ------------------------------------------------------------------------ running the pages


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the docs name, built once: checkpoints, pictures, converted models."""
    from PIL import Image

    from owlvit_cli.api import convert_checkpoint
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.testing.fixtures import build_checkpoint

    root = tmp_path_factory.mktemp("docs-example")
    for name, (variant, layout, seed) in CHECKPOINTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        build_checkpoint(root / name, VARIANTS[variant], layout, "float32", seed)
    picture = Image.open(SAMPLE).convert("RGB")
    picture.save(root / "street.jpg", quality=95)
    picture.crop((0, 0, 160, 160)).save(root / "example_crop.jpg", quality=95)
    (root / "photos").mkdir()
    picture.save(root / "photos" / "holiday.jpg", quality=95)
    converted = root / ".converted"
    for name, source in CONVERTED.items():
        convert_checkpoint(root / source, converted / name)
    return root


def page_directory(example: Path, page: Path, directory: Path) -> Path:
    """A fresh copy of the example for one page: inputs hard-linked, models copied."""
    shutil.copytree(example, directory, copy_function=os.link, ignore=lambda *_: {".converted"})
    if page.name not in STARTS_UNCONVERTED:
        for name in CONVERTED:
            shutil.copytree(example / ".converted" / name, directory / name)
    return directory


def environment(tmp_path: Path, hub: HubServer) -> dict[str, str]:
    """A user's shell: owlvit on PATH, a token and a Hub that answers, nothing else of HF's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        HF_HOME=str(tmp_path / "hf_home"),
        HF_ENDPOINT=hub.url,
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
    )
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> None:
    runners: dict[str, Callable[[Block, Path, dict[str, str]], None]] = {
        "bash": run_bash,
        "console": run_console,
        "python": run_python,
    }
    runners[block.lang](block, cwd, env)


def shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def run_bash(block: Block, cwd: Path, env: dict[str, str]) -> None:
    proc = shell(block.text, cwd, env)
    assert proc.returncode == block.exits, f"{block} exited {proc.returncode}:\n{proc.stderr}"


def run_console(block: Block, cwd: Path, env: dict[str, str]) -> None:
    """Each `$` line runs; the lines shown under it must be among the lines it printed."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip():
            assert steps, f"{block}: output shown before any command"
            steps[-1][1].append(line)
    for number, (command, shown) in enumerate(steps, 1):
        proc = shell(command, cwd, env)
        expected = block.exits if number == len(steps) else 0
        printed = (proc.stdout + proc.stderr).splitlines()
        assert proc.returncode == expected, f"{block}: `{command}` exited {proc.returncode}"
        for line in shown:
            pattern = re.compile(".*?".join(map(re.escape, line.split("…"))))
            assert any(pattern.fullmatch(out) for out in printed), (
                f"{block}: `{command}` did not print\n  {line}\nbut\n" + "\n".join(printed)
            )


def run_python(block: Block, cwd: Path, env: dict[str, str]) -> None:
    """Run twice: an example a reader tries again must not trip over its own outputs."""
    for attempt in ("first", "second"):
        proc = subprocess.run(
            [sys.executable, "-c", block.text],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"{block}, {attempt} run:\n{proc.stderr}"


@pytest.mark.parametrize(
    "page",
    [page for page in PAGES if runnable(page)],
    ids=lambda page: str(page.relative_to(ROOT)),
)
def test_page_runs_as_written(page: Path, example: Path, tmp_path: Path):
    directory = page_directory(example, page, tmp_path / "work")
    state = HubState(tokens={TOKEN: "tester"}, orgs={"my-org": {"tester"}})
    with HubServer(state) as hub:
        env = environment(tmp_path, hub)
        for block in runnable(page):
            run_block(block, directory, env)
