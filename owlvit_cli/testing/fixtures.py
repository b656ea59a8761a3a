"""Random checkpoints in scenic's exact on-disk format, for tests, the demo and benchmarks.

Values are drawn so that no tensor is trivially 0 or 1 (LayerNorm scales 1 + 0.1·N, biases
0.1·N, kernels N/√fan_in, embeddings 0.5·N): a wrong transpose or name then changes outputs.
Files are written by Flax's own msgpack serializer, as `flax.training.checkpoints` does;
Orbax directories by flax's `save_checkpoint` or orbax's own `Checkpointer`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from owlvit_cli.checkpoint.reader import LAYOUTS
from owlvit_cli.model.dtypes import numpy_dtype
from owlvit_cli.model.spec import ModelSpec, expected_shapes
from owlvit_cli.model.tree import nest

V1_LAYERNORM_NAMES = {"ln_0": "ln_1", "ln_1": "ln_2"}


def layout_name(path: str, layout: str) -> str:
    """A current-scenic parameter path as the given layout spells it (inverse of the reader)."""
    if layout == "current":
        return path
    parts = path.split("/")
    out = []
    in_block = False
    for part in parts:
        if part.startswith("resblocks_"):
            part = "resblocks." + part.removeprefix("resblocks_")
            in_block = True
        elif in_block and layout == "v1":
            part = V1_LAYERNORM_NAMES.get(part, part)
        out.append(part)
    return "/".join(out)


def random_tensor(rng: np.random.Generator, path: str, shape: tuple[int, ...]) -> np.ndarray:
    leaf = path.rsplit("/", 1)[-1]
    if leaf == "scale":
        return 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
    if leaf == "bias":
        return 0.1 * rng.standard_normal(shape, dtype=np.float32)
    if leaf == "kernel":
        fan_in = int(np.prod(shape[:-1])) if "/attn/out/" not in path else int(np.prod(shape[:2]))
        return rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))
    if path.endswith("logit_scale"):
        return np.asarray(np.log(1 / 0.07), dtype=np.float32).reshape(shape)
    return 0.5 * rng.standard_normal(shape, dtype=np.float32)


def random_params(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """{current-scenic path: float32 array} for every parameter of `spec`."""
    rng = np.random.default_rng(seed)
    return {path: random_tensor(rng, path, shape) for path, shape in expected_shapes(spec).items()}


def checkpoint_tree(
    params: dict[str, np.ndarray],
    layout: str = "current",
    dtype: str = "float32",
    extra_top_level: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The top-level state dict scenic saves for `params` in `layout`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    cast = numpy_dtype(dtype)
    renamed = {layout_name(p, layout): np.asarray(a).astype(cast) for p, a in params.items()}
    tree = nest(renamed)
    state: dict[str, Any]
    if layout == "v1":
        state = {"optimizer": {"target": tree, "state": {"step": 0}}}
    else:
        state = {"params": tree}
    state.update(extra_top_level or {})
    return state


def write_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Serialise with Flax, exactly as `flax.training.checkpoints.save_checkpoint` would."""
    from flax import serialization

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(serialization.msgpack_serialize(state))
    tmp.replace(target)
    return target


def build_checkpoint(
    path: str | os.PathLike[str],
    spec: ModelSpec,
    layout: str = "current",
    dtype: str = "float32",
    seed: int = 0,
    *,
    orbax: dict[str, Any] | None = None,
) -> Path:
    """Write a random checkpoint of `spec` in `layout` to `path`: a msgpack file, or with
    `orbax` (`write_orbax_checkpoint`'s options, `{}` for its defaults) an Orbax checkpoint,
    whose directory is returned."""
    state = checkpoint_tree(random_params(spec, seed), layout, dtype)
    if orbax is not None:
        return write_orbax_checkpoint(path, state, **orbax)
    return write_checkpoint(path, state)


ORBAX_WRITERS = ("flax", "orbax")
ORBAX_TMP = ".orbax-checkpoint-tmp"  # what orbax names a save in progress


def write_orbax_checkpoint(
    path: str | os.PathLike[str],
    state: dict[str, Any],
    *,
    writer: str = "orbax",
    ocdbt: bool = True,
    zarr3: bool = False,
    step: int = 0,
) -> Path:
    """Write `state` as an Orbax checkpoint with the libraries' own save functions; return the
    checkpoint directory.

    writer "flax": `flax.training.checkpoints.save_checkpoint(path, state, step)` with flax's
    defaults (OCDBT), which makes `path` a workdir holding `checkpoint_<step>/`. writer
    "orbax": `orbax.checkpoint.Checkpointer(PyTreeCheckpointHandler(...))` saving to `path`
    itself, with or without OCDBT, zarr v2 or v3."""
    target = Path(path).absolute()  # orbax refuses relative paths, after creating its tmp dir
    if writer == "flax":
        if not ocdbt or zarr3:
            raise ValueError("flax's save_checkpoint writes its defaults (OCDBT, zarr v2)")
        from flax.training import checkpoints

        with _removed_on_failure(target):
            return Path(checkpoints.save_checkpoint(target, state, step, keep=1_000_000))
    if writer != "orbax":
        raise ValueError(f"writer must be one of {ORBAX_WRITERS}")
    import orbax.checkpoint as ocp

    handler = ocp.PyTreeCheckpointHandler(use_ocdbt=ocdbt, use_zarr3=zarr3)
    with _removed_on_failure(target), ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save(target, state)
    return target


@contextlib.contextmanager
def _removed_on_failure(target: Path) -> Iterator[None]:
    """A save that fails leaves no unfinished `*.orbax-checkpoint-tmp*` entry (nor a directory
    the save created) behind, for the next test to trip over."""
    existed = set(target.parent.iterdir()) if target.parent.is_dir() else set()
    existed |= set(target.iterdir()) if target.is_dir() else set()
    created_target = not target.exists()
    try:
        yield
    except BaseException:
        for parent in (target, target.parent):
            if parent.is_dir():
                for entry in parent.iterdir():
                    if entry not in existed and ORBAX_TMP in entry.name:
                        shutil.rmtree(entry, ignore_errors=True)
        if created_target and target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        raise
