"""verify's images and pixel arrays as a hostile directory offers them: pipes, devices and
.npy headers that lie, each refused in one line before anything is read."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SAMPLE, problem_lines, run_console_script


@contextlib.contextmanager
def fifo_with_a_writer(path: Path) -> Iterator[Path]:
    """A FIFO whose write end a thread opens: were owlvit to open it for reading it would get
    an empty file instead of hanging the test."""
    os.mkfifo(path)
    rescue = threading.Thread(target=lambda: open(path, "wb").close(), daemon=True)
    rescue.start()
    yield path
    if rescue.is_alive():
        with open(path, "rb"):
            pass


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A .npy file's first bytes, declaring `shape`, with no data after them."""
    import io

    from numpy.lib import format as npy

    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _hostile_image(kind: str, tmp_path: Path) -> Path:
    if kind == "dev_zero_npy":
        link = tmp_path / "x.npy"
        link.symlink_to("/dev/zero")
        return link
    path = tmp_path / "x.npy"
    if kind == "lying_npy":  # 1 KB declaring 60000×60000×3 float32 (40 GB)
        path.write_bytes(_npy_header((60000, 60000, 3)).ljust(1024, b"\0"))
    elif kind == "short_npy":  # the model's shape, but the data cut short
        path.write_bytes(_npy_header((64, 64, 3)) + b"\0" * 1000)
    elif kind == "object_npy":
        path.write_bytes(_npy_header((64, 64, 3), "|O"))
    elif kind == "directory_png":
        path = tmp_path / "x.png"
        path.mkdir()
    return path


HOSTILE = {
    "dev_zero_npy": "character device",
    "lying_npy": "[60000, 60000, 3]",
    "short_npy": "file holds",
    "object_npy": "expected a float array",
    "directory_png": "is a directory",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_pixel_files_are_one_line_exit_2(kind, tiny_checkpoint, converted, tmp_path):
    ckpt = tiny_checkpoint()
    image = _hostile_image(kind, tmp_path)
    result = run_console_script("verify", ckpt, converted(ckpt), "--image", image, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = problem_lines(result.stderr)
    assert len(lines) == 1 and HOSTILE[kind] in lines[0], result.stderr


@pytest.mark.parametrize("name", ["x.npy", "x.png"])
def test_a_fifo_image_is_refused_not_waited_on(name, tiny_checkpoint, converted, tmp_path):
    ckpt = tiny_checkpoint()
    with fifo_with_a_writer(tmp_path / name) as fifo:
        result = run_console_script("verify", ckpt, converted(ckpt), "--image", fifo)
    assert result.returncode == 2, result.stderr
    assert "pipe (FIFO)" in result.stderr and len(problem_lines(result.stderr)) == 1


def test_a_good_npy_still_reads(tiny_checkpoint, converted, tmp_path):
    """The header checks pass a well-formed array of the model's shape (v1-tiny: 64 px)."""
    from PIL import Image

    pixels = np.asarray(Image.open(SAMPLE).convert("RGB").resize((64, 64)), np.float32) / 255
    np.save(tmp_path / "x.npy", pixels)
    ckpt = tiny_checkpoint()
    result = run_console_script("verify", ckpt, converted(ckpt), "--image", tmp_path / "x.npy")
    assert result.returncode == 0, result.stderr
