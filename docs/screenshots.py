"""`make screenshots`: draw what convert, verify and push look like in a terminal.

Each command runs for real in a pseudo-terminal (`owlvit_cli.testing.terminal`); its final
screen is drawn as SVG by rich (`Console.export_svg`) into docs/. The checkpoint is a full-size
B/32 with random weights written by the fixture builder (about 600 MB, in a temporary
directory removed afterwards); the push goes to the test Hub server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from owlvit_cli.model.spec import VARIANTS  # noqa: E402
from owlvit_cli.testing.fixtures import build_checkpoint  # noqa: E402
from owlvit_cli.testing.terminal import Screen, run_in_terminal  # noqa: E402
from tests.hub_server import HubServer  # noqa: E402

COLUMNS = 120
HUB_ENV = {"HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": "hf_test_token"}


def save_svg(screen: Screen, command: str, path: Path) -> None:
    console = Console(record=True, width=COLUMNS, file=io.StringIO(), force_terminal=True)
    console.print(f"$ {command}", style="bold", soft_wrap=True)
    console.print(screen.rich_text(), soft_wrap=True)
    path.write_text(console.export_svg(title=command))
    print(f"{path}: {command} (exit {screen.exit_code})")
    print(screen.text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", default="v1-b32", choices=sorted(VARIANTS))
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="owlvit-screens-") as work, HubServer() as hub:
        root = Path(work)
        ckpt = build_checkpoint(root / "clip_vit_b32", VARIANTS[args.variant], "v1", "float32", 0)
        env = {"HF_HOME": str(root / "hf_home"), **HUB_ENV, "HF_ENDPOINT": hub.url}
        runs = [
            ("convert", ["convert", ckpt.name, "owlvit-b32"]),
            ("verify", ["verify", ckpt.name, "owlvit-b32", "--record"]),
            ("push", ["push", "owlvit-b32", "tester/owlvit-base-patch32-scenic"]),
        ]
        for name, command in runs:
            screen = run_in_terminal(*command, env=env, columns=COLUMNS, cwd=root)
            save_svg(screen, " ".join(["owlvit", *command]), args.out / f"screen_{name}.svg")
            if screen.exit_code != 0:
                return screen.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
