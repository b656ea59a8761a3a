"""Bad inputs and hostile conditions: one line, a documented exit code, nothing left behind."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owlvit_cli.checkpoint.reader import open_checkpoint
from owlvit_cli.errors import CheckpointError, OwlvitError
from owlvit_cli.model.spec import VARIANTS
from owlvit_cli.testing.fixtures import checkpoint_tree, random_params, write_checkpoint


def _bad_inputs(tmp_path: Path, good: bytes) -> dict[str, Path]:
    """The matrix of things users feed the tool instead of a scenic checkpoint."""
    import safetensors.numpy

    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = tmp_path / name
        files[name].write_bytes(data)

    put("empty", b"")
    put("random", np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    put("truncated_head", good[:100])
    put("truncated_tail", good[: len(good) - 10])
    put("pytorch.bin", b"PK\x03\x04" + good[:200])
    put("pickle.pt", b"\x80\x02}q\x00." + b"\0" * 10)
    safetensors.numpy.save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "w.safetensors"))
    files["safetensors"] = tmp_path / "w.safetensors"
    put("zip", b"PK\x05\x06" + b"\0" * 18)
    put("other_msgpack", msgpack.packb({"params": {"encoder": {"dense": {"w": [1, 2]}}}}))
    files["directory"] = tmp_path / "a_dir"
    files["directory"].mkdir()
    files["missing"] = tmp_path / "does_not_exist"
    params = random_params(VARIANTS["v1-tiny"])
    corrupt = dict(params)
    corrupt["obj_box_head/Dense_1/kernel"] = corrupt["obj_box_head/Dense_1/kernel"][:, :5]
    files["corrupt_shape"] = write_checkpoint(tmp_path / "corrupt", checkpoint_tree(corrupt))
    missing = {k: v for k, v in params.items() if k != "class_head/logit_scale/bias"}
    files["missing_tensor"] = write_checkpoint(tmp_path / "missing_t", checkpoint_tree(missing))
    extra = {**params, "class_head/surprise/kernel": np.ones((2, 2), np.float32)}
    files["extra_tensor"] = write_checkpoint(tmp_path / "extra", checkpoint_tree(extra))
    return files


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from owlvit_cli.testing.fixtures import build_checkpoint

    root = tmp_path_factory.mktemp("bad")
    good = build_checkpoint(root / "good", VARIANTS["v1-tiny"]).read_bytes()
    return _bad_inputs(root, good)


BAD = [
    "empty", "random", "truncated_head", "truncated_tail", "pytorch.bin", "pickle.pt",
    "safetensors", "zip", "other_msgpack", "directory", "missing", "corrupt_shape",
    "missing_tensor", "extra_tensor",
]  # fmt: skip


def _assert_one_line_error(result: object, code: int = 2) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "internal error" not in lines[0]


@pytest.mark.parametrize("case", BAD)
def test_inspect_and_convert_reject_bad_input(cli, bad_inputs, tmp_path: Path, case: str):
    if case not in ("corrupt_shape", "missing_tensor", "extra_tensor"):
        _assert_one_line_error(cli("inspect", bad_inputs[case]))
    out = tmp_path / "out"
    _assert_one_line_error(cli("convert", bad_inputs[case], out))
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["random", "pickle.pt", "missing_tensor", "directory"])
def test_verify_rejects_bad_checkpoints(cli, bad_inputs, converted, tiny_checkpoint, case: str):
    hf_dir = converted(tiny_checkpoint())
    _assert_one_line_error(cli("verify", bad_inputs[case], hf_dir))


def test_debug_shows_traceback(cli, bad_inputs):
    result = cli("inspect", bad_inputs["random"], "--debug")
    assert result.exit_code == 2 and "Traceback" in result.stderr


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_checkpoints_convert(cli, tiny_checkpoint, tmp_path: Path, dtype: str):
    result = cli("convert", tiny_checkpoint("v2-tiny", "v2", dtype), tmp_path / "o", "--json")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("json_mode", [False, True])
def test_interrupt_mid_convert_exits_130_and_cleans_up(
    cli, tiny_checkpoint, tmp_path, monkeypatch, json_mode: bool
):
    import owlvit_cli.convert.safetensors_writer as writer

    real = writer.write_safetensors

    def interrupted(path, tensors, dtype, on_tensor=lambda _: None):
        def boom(tensor):
            raise KeyboardInterrupt

        return real(path, tensors, dtype, boom)

    monkeypatch.setattr(writer, "write_safetensors", interrupted)
    result = cli("convert", tiny_checkpoint(), tmp_path / "out", *(["--json"] if json_mode else []))
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert list(tmp_path.iterdir()) == []
    if json_mode:  # the CI contract: one error object on stdout, same code
        error = json.loads(result.stdout)["error"]
        assert (error["code"], error["kind"]) == (130, "interrupted")
    else:
        assert result.stdout == ""


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                           capture_output=True, check=False)  # fmt: skip
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_disk_full_mid_write(cli, tiny_checkpoint, tmp_path: Path):
    with _tmpfs(tmp_path / "small", "size=1m") as small:
        result = cli("convert", tiny_checkpoint(), small / "out")
        _assert_one_line_error(result)
        assert "No space left" in result.stderr
        assert list(small.iterdir()) == []


def test_read_only_output_location(cli, tiny_checkpoint, tmp_path: Path):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        result = cli("convert", tiny_checkpoint(), read_only / "out")
        _assert_one_line_error(result)
        assert list(read_only.iterdir()) == []


def test_output_is_a_file(cli, tiny_checkpoint, tmp_path: Path):
    target = tmp_path / "file"
    target.write_text("x")
    _assert_one_line_error(cli("convert", tiny_checkpoint(), target, "--overwrite"))
    assert target.read_text() == "x"


@pytest.fixture(scope="module")
def small_checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    spec = VARIANTS["v1-tiny"]
    params = {k: v[..., :3] if v.ndim else v for k, v in random_params(spec).items()}
    path = tmp_path_factory.mktemp("fuzz") / "small"
    return write_checkpoint(path, checkpoint_tree(params, "v1")).read_bytes()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_bytes_raise_only_our_error(small_checkpoint_bytes: bytes, tmp_path_factory, data):
    """Mutated checkpoints either read or raise CheckpointError, never anything else."""
    blob = bytearray(small_checkpoint_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(1, len(blob)))]
    path = tmp_path_factory.mktemp("f") / "ckpt"
    path.write_bytes(bytes(blob))
    try:
        with open_checkpoint(path) as ckpt:
            for entry in ckpt:
                ckpt.read(entry.path, np.float32)
    except CheckpointError:
        pass
    except OwlvitError as exc:  # pragma: no cover - a subclass outside the reader's
        pytest.fail(f"unexpected {type(exc).__name__}: {exc}")


def test_real_ctrl_c_mid_convert(tmp_path: Path, tmp_path_factory):
    """SIGINT to the real console script while it writes: exit 130, nothing left behind.
    A full-size B/32 (600 MB) checkpoint keeps it writing long enough to be caught."""
    import os
    import signal
    import sys
    import time

    from owlvit_cli.testing.fixtures import build_checkpoint

    ckpt = build_checkpoint(tmp_path_factory.mktemp("b32") / "b32", VARIANTS["v1-b32"])
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "owlvit_cli", "convert", str(ckpt), str(out_parent / "model")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 120
    while not any(".owlvit-tmp-" in p.name for p in out_parent.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "never started writing"
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    ckpt.unlink()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["error: interrupted"]
    assert list(out_parent.iterdir()) == []


def test_permission_denied_is_one_line(cli, tiny_checkpoint, monkeypatch):
    """Root reads anything, so the kernel's EACCES is injected where the file is opened."""
    from owlvit_cli.checkpoint import reader as checkpoint

    real_open = Path.open
    target = tiny_checkpoint()

    def denied(self: Path, *args, **kwargs):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint.Path, "open", denied)
    result = cli("inspect", target)
    _assert_one_line_error(result)
    assert "permission denied" in result.stderr


def test_model_dir_whose_config_does_not_fit_its_weights(cli, tiny_checkpoint, converted, tmp_path):
    import json
    import shutil

    ckpt = tiny_checkpoint()
    broken = tmp_path / "model"
    shutil.copytree(converted(ckpt), broken)
    config = json.loads((broken / "config.json").read_text())
    config["vision_config"]["num_channels"] = 4  # the patch conv weights have 3
    (broken / "config.json").write_text(json.dumps(config))
    result = cli("verify", ckpt, broken)
    _assert_one_line_error(result)
    assert "cannot load the model" in result.stderr
