"""Import boundaries that keep commands fast and layers honest, checked in fresh interpreters."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SAMPLE, run_console_script

HEAVY = ("numpy", "jax", "torch", "transformers")


def imported_after(statement: str) -> set[str]:
    """Top-level package names in sys.modules after running `statement` in a new process."""
    code = f"{statement}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_cli_imports_no_heavy_library_before_a_command_runs():
    modules = imported_after("import owlvit_cli.cli.app")
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)


def test_publish_needs_no_numpy_nor_the_conversion_side():
    modules = imported_after(
        "import owlvit_cli.publish.hub, owlvit_cli.publish.model_card, owlvit_cli.cli.commands.push"
    )
    assert "numpy" not in modules
    forbidden = ("owlvit_cli.convert", "owlvit_cli.scenic", "owlvit_cli.verify")
    assert not [m for m in modules if m.startswith(forbidden)]


@pytest.mark.parametrize("package", ["checkpoint", "model"])
def test_checkpoint_and_model_import_no_ml_framework(package: str):
    root = Path(__file__).parents[1] / "owlvit_cli" / package
    names = sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__")
    modules = imported_after("\n".join(f"import owlvit_cli.{package}.{name}" for name in names))
    assert not {m.split(".")[0] for m in modules} & {"jax", "torch", "transformers"}


def imported_by_command(*args: object) -> set[str]:
    """Every module a successful console-script run imported (from -X importtime's profile)."""
    proc = run_console_script(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}


def test_push_dry_run_imports_no_numpy(tiny_checkpoint, converted):
    hf_dir = converted(tiny_checkpoint("v1-tiny"))
    imported = imported_by_command("push", hf_dir, "org/model", "--dry-run", "--json")
    assert "owlvit_cli.publish.hub" in imported  # the profile did record the imports
    assert "numpy" not in imported


@pytest.mark.parametrize("extra", [[], ["--mapping"]])
def test_inspect_of_a_msgpack_file_imports_no_numpy(tiny_checkpoint, extra: list[str]):
    """Listing and planning need shapes, not arrays: numpy was a fifth of inspect's time."""
    imported = imported_by_command("inspect", tiny_checkpoint("v1-tiny"), "--json", *extra)
    assert "owlvit_cli.convert.mapping" in imported  # the profile did record the imports
    assert "numpy" not in imported


@pytest.mark.parametrize("preprocessing", ["processor", "notebook", "evaluator"])
def test_detect_imports_no_scenic_runtime(tiny_checkpoint, converted, preprocessing: str):
    """detect runs the transformers model: jax, flax and TensorFlow are seconds of imports
    that a detection never uses, whichever pipeline makes its pixels."""
    hf_dir = converted(tiny_checkpoint("v2-tiny"))
    imported = imported_by_command("detect", hf_dir, SAMPLE, "--query", "a cat", "--json",
                                   "--preprocessing", preprocessing)  # fmt: skip
    assert "transformers" in imported  # the profile did record the model's imports
    assert not {m.split(".")[0] for m in imported} & {"jax", "jaxlib", "flax", "tensorflow"}


# --------------------------------------------------------------------------------------------
# The order of layers, read from the source: every import, at the top of a module or inside a
# function, points to the module's own package or to a layer below it, and no two modules
# import each other (directly or round a longer loop).

PACKAGE = Path(__file__).parents[1] / "owlvit_cli"
LAYERS: list[tuple[str, ...]] = [  # bottom to top; each entry a layer, each name a package
    ("ground",),  # the top-level modules in GROUND: they may import each other
    ("model",),
    ("checkpoint", "scenic"),
    ("convert",),
    ("runtime",),
    ("verify", "detect"),
    ("publish",),
    ("api",),  # api.py, environment.py and the package's own __init__
    ("cli",),  # cli/ and __main__.py
    ("testing",),  # fixtures and the demo: nothing in the package imports them
]
GROUND = (
    "errors",
    "progress",
    "version",
    "interrupts",
    "json_text",
    "input_files",
    "redaction",
    "atomic",
    "hold",
    "memory",
    "cache",
)
TOP_LEVEL = {"owlvit_cli": "api", "api": "api", "environment": "api", "__main__": "cli"}


def module_names() -> dict[str, Path]:
    """{dotted module name: file} for every module of the package."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its source (TYPE_CHECKING and
    function-level imports included); `from pkg import mod` counts as importing `pkg.mod`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def group_of(module: str) -> str:
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "owlvit_cli"
    if first in GROUND:
        return "ground"
    return TOP_LEVEL.get(first, first)


def rank_of(group: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if group in layer:
            return rank
    raise AssertionError(f"{group} is in no layer: add it to LAYERS in {__file__}")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point to a higher layer, or sideways to another package of the same one."""
    wrong = []
    for module, targets in sorted(graph.items()):
        group = group_of(module)
        for target in sorted(targets):
            other = group_of(target)
            if other != group and rank_of(other) >= rank_of(group):
                wrong.append(f"{module} ({group}) imports {target} ({other})")
    return wrong


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_module_belongs_to_a_layer():
    for module in module_names():
        rank_of(group_of(module))


def test_no_module_imports_from_a_layer_above_it():
    wrong = upward_imports(import_graph())
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_no_two_modules_import_each_other():
    cycles = import_cycles(import_graph())
    assert not cycles, "modules that import each other: " + "; ".join(map(" ↔ ".join, cycles))


def test_the_rules_catch_an_upward_import_and_a_cycle():
    """The checks themselves: a model module reaching up to convert, and a loop of three."""
    graph = {
        "owlvit_cli.model.spec": {"owlvit_cli.convert.mapping"},
        "owlvit_cli.convert.mapping": set(),
    }
    assert upward_imports(graph) == [
        "owlvit_cli.model.spec (model) imports owlvit_cli.convert.mapping (convert)"
    ]
    loop = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(loop) == [["a", "b", "c"]]
