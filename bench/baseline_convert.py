"""The naive conversion that `owlvit convert` is measured against (bench/README.md).

This is how a conversion script is usually written: restore the whole checkpoint with Flax,
build a randomly initialised transformers model from the config, `load_state_dict` the mapped
tensors and `save_pretrained`. It holds the file's bytes, the restored tree, the model and the
mapped copies at once, which is what the streaming converter avoids.

Key names and layout changes come from `owlvit_cli.convert.mapping`'s plan and the config from
`owlvit_cli.convert.hf_files.config_dict` (read by transformers' own config class), so the two
conversions differ only in how the bytes move, not in what they compute. The processor and
tokenizer files are written too, so both write the same files.

Usage: python bench/baseline_convert.py CKPT OUT  (prints one JSON object of phase timings)
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def restore(path: Path) -> dict[str, Any]:
    """The whole state, as `flax.training.checkpoints.restore_checkpoint` would read it."""
    from flax import serialization

    return serialization.msgpack_restore(path.read_bytes())


def flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """('a/b/c', array) pairs of a nested dict."""
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from flatten(value, path)
        else:
            yield path, np.asarray(value)


def current_names(path: Path, state: dict[str, Any]) -> dict[str, np.ndarray]:
    """{current scenic path: array}, with the reader's own layout detection and renaming."""
    from owlvit_cli.checkpoint.reader import canonical_name, detect_layout

    # Pre-Optax train states keep params at optimizer/target, newer ones at params.
    params = state["optimizer"]["target"] if "optimizer" in state else state.get("params", state)
    flat = dict(flatten(params))
    layout = detect_layout(path, flat)  # reads the names only
    return {canonical_name(name, layout): array for name, array in flat.items()}


def convert(checkpoint: Path, output: Path) -> dict[str, float]:
    """Convert the naive way; return seconds per phase."""
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        timings[name] = round(now - started, 3)
        started = now

    import torch
    import transformers

    from owlvit_cli.convert.hf_files import config_dict, write_hf_files
    from owlvit_cli.convert.mapping import plan_mapping
    from owlvit_cli.model.model_dir import FLAVORS
    from owlvit_cli.model.spec import spec_from_shapes

    lap("import")
    params = current_names(checkpoint, restore(checkpoint))
    lap("restore")
    spec = spec_from_shapes({name: array.shape for name, array in params.items()})
    plan = plan_mapping({name: array.shape for name, array in params.items()}, spec)
    flavor = FLAVORS[spec.version]
    config = getattr(transformers, flavor.config_class).from_dict(config_dict(spec))
    model = getattr(transformers, flavor.model_class)(config)
    lap("init")
    # from_numpy warns on read-only arrays (views of the restored bytes); nothing writes them.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    state_dict = {
        t.target: torch.from_numpy(np.ascontiguousarray(t.build(params.__getitem__)))
        for t in plan.tensors
    }
    model.load_state_dict(state_dict, strict=True)
    lap("load_state_dict")
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output))
    write_hf_files(output, spec, "float32")
    lap("save")
    return timings


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    print(json.dumps(convert(Path(argv[0]), Path(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
