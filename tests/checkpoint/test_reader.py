"""The reader: layouts, lazy tensors, dtypes, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import msgpack
import numpy as np
import pytest

from owlvit_cli.checkpoint.inspection import checkpoint_spec
from owlvit_cli.checkpoint.msgpack_index import ArrayRecord
from owlvit_cli.checkpoint.reader import canonical_name, detect_layout, open_checkpoint
from owlvit_cli.errors import CheckpointError
from owlvit_cli.model.spec import VARIANTS, expected_shapes, spec_from_shapes
from owlvit_cli.testing.fixtures import (
    checkpoint_tree,
    layout_name,
    random_params,
    write_checkpoint,
)
from tests.helpers import REFERENCE_NAMES, TINY_CASES, reference_checkpoint


@pytest.mark.parametrize("name", sorted(REFERENCE_NAMES))
def test_reference_checkpoints_read_with_the_right_layout(name: str, reference_manifest: dict):
    key = {"v1_release": "v1", "v2_release": "v2", "v1_current": "v1cur"}[name]
    manifest = reference_manifest[key]
    with open_checkpoint(reference_checkpoint(name)) as ckpt:
        assert ckpt.layout == REFERENCE_NAMES[name][1]
        sources = {e.source_path: list(e.shape) for e in ckpt}
        assert sources == manifest["checkpoint_param_shapes"]
        spec = checkpoint_spec(ckpt)
        assert spec.vision.image_size == manifest["input_size"]
        assert spec.objectness_head == manifest["objectness_head"]
        assert {e.path: e.shape for e in ckpt} == expected_shapes(spec)


def test_values_match_msgpack_and_are_read_only(tiny_checkpoint):
    path = tiny_checkpoint("v2-tiny", "v2")
    raw = msgpack.unpackb(path.read_bytes(), raw=False)
    data = raw["params"]["class_head"]["Dense_0"]["kernel"]
    shape, dtype, payload = msgpack.unpackb(data.data, raw=False)
    expected = np.frombuffer(payload, dtype=dtype).reshape(shape)
    with open_checkpoint(path) as ckpt:
        got = ckpt.read("class_head/Dense_0/kernel")
        assert not got.flags.writeable
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("variant", "layout"), TINY_CASES)
def test_tiny_checkpoints_every_layout(tiny_checkpoint, variant: str, layout: str):
    spec = VARIANTS[variant]
    params = random_params(spec)
    with open_checkpoint(tiny_checkpoint(variant, layout)) as ckpt:
        assert ckpt.layout == layout
        assert checkpoint_spec(ckpt) == spec
        assert ckpt.root == ("optimizer/target" if layout == "v1" else "params")
        for path, value in params.items():
            np.testing.assert_array_equal(ckpt.read(path), value)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("layout", ["v1", "v2", "current"])
def test_full_size_trees_detect_and_derive_on_shapes(variant: str, layout: str):
    """Full-size trees as shapes only: no 1.7 GB files in tests."""
    spec = VARIANTS[variant]
    shapes = {layout_name(p, layout): s for p, s in expected_shapes(spec).items()}
    records = {p: ArrayRecord(s, "float32", ((0, 0),)) for p, s in shapes.items()}
    assert detect_layout(Path("x"), records) == layout
    canonical = {canonical_name(p, layout): s for p, s in shapes.items()}
    assert spec_from_shapes(canonical) == spec


def test_large_l14_spec_reads_heads_from_kernels():
    spec = VARIANTS["v1-l14"]
    assert (spec.text.num_attention_heads, spec.vision.num_attention_heads) == (12, 16)
    assert spec.vision.image_size == 840 and spec.grid_size == 60


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_leaves_cast_on_request(tmp_path: Path, dtype: str):
    spec = VARIANTS["v1-tiny"]
    params = random_params(spec)
    path = write_checkpoint(tmp_path / "ckpt", checkpoint_tree(params, "v2", dtype))
    with open_checkpoint(path) as ckpt:
        entry = ckpt["backbone/clip/visual/conv1/kernel"]
        assert entry.dtype.name == dtype
        value = ckpt.read(entry.path, np.float32)
        assert value.dtype == np.float32
        cast = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
        np.testing.assert_array_equal(value, params[entry.path].astype(cast).astype(np.float32))


def test_extra_top_level_keys_are_ignored(tmp_path: Path):
    params = random_params(VARIANTS["v2-tiny"])
    extra = {"step": 1234, "opt_state": {"mu": {"x": np.zeros(3, np.float32)}}}
    path = write_checkpoint(
        tmp_path / "ckpt", checkpoint_tree(params, "current", extra_top_level=extra)
    )
    with open_checkpoint(path) as ckpt:
        assert ckpt.other_top_level == ["opt_state", "step"]
        assert checkpoint_spec(ckpt).objectness_head


def test_chunked_arrays_are_reassembled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from flax import serialization

    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 4096)
    params = random_params(VARIANTS["v1-tiny"])
    path = write_checkpoint(tmp_path / "ckpt", checkpoint_tree(params, "current"))
    with open_checkpoint(path) as ckpt:
        entry = ckpt["backbone/clip/text/token_embedding/embedding"]
        assert len(entry.record.segments) > 1
        np.testing.assert_array_equal(ckpt.read(entry.path), params[entry.path])


def _write(tmp_path: Path, data: bytes, name: str = "bad") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_FILES = {
    "empty": (b"", "empty"),
    "random bytes": (
        bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
        "msgpack|ends early|map",
    ),
    "zip (PyTorch .pt)": (b"PK\x03\x04" + b"\0" * 64, "zip"),
    "pickle": (b"\x80\x04\x95" + b"\0" * 64, "pickle"),
    "safetensors": (b"\x10\0\0\0\0\0\0\0" + b'{"a":1}        ' + b"\0" * 8, "safetensors"),
    "msgpack list": (msgpack.packb([1, 2, 3]), "map"),
    "other model": (msgpack.packb({"params": {"dense": {"kernel": 1.0}}}), "not an array"),
    "other model tree": (msgpack.packb({"params": {"dense": {}}}), "transformer"),
    "no params": (msgpack.packb({"foo": 1, "bar": {}}), "found bar, foo"),
    "text file": ("# a README, café\nnot weights\n".encode(), "looks like a text file"),
    "one number then more": (b"\x05\x81\xa1a\x01", "should be one msgpack map"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_checkpoint_error(tmp_path: Path, case: str):
    data, fragment = BAD_FILES[case]
    with pytest.raises(CheckpointError, match=fragment):
        open_checkpoint(_write(tmp_path, data))


@pytest.mark.parametrize("fraction", [0.0001, 0.1, 0.5, 0.9, 0.99999])
def test_truncated_checkpoints(tmp_path: Path, tiny_checkpoint, fraction: float):
    data = tiny_checkpoint("v1-tiny", "v1").read_bytes()
    cut = _write(tmp_path, data[: max(1, int(len(data) * fraction))])
    with pytest.raises(CheckpointError):
        open_checkpoint(cut)


def test_missing_path_and_directories(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no such file"):
        open_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="is a directory"):
        open_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({}))
    with pytest.raises(CheckpointError, match="transformers model"):
        open_checkpoint(tmp_path)


def test_unreadable_file(tmp_path: Path, tiny_checkpoint):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files without read permission")
    path = _write(tmp_path, tiny_checkpoint().read_bytes())
    path.chmod(0)
    with pytest.raises(CheckpointError, match="permission denied"):
        open_checkpoint(path)


def test_mixed_block_naming_is_rejected(tmp_path: Path):
    params = random_params(VARIANTS["v1-tiny"])
    renamed = {
        (p.replace("resblocks_0", "resblocks.0") if "/visual/" in p else p): a
        for p, a in params.items()
    }
    from owlvit_cli.model.tree import nest

    path = write_checkpoint(tmp_path / "c", {"params": nest(renamed)})
    with pytest.raises(CheckpointError, match="both"):
        open_checkpoint(path)
