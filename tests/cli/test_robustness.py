"""Bad inputs and hostile conditions: one line, a documented exit code, nothing left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
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
from owlvit_cli.model.model_dir import RECORD_FILE, VERIFICATION_FILE
from owlvit_cli.model.spec import VARIANTS
from owlvit_cli.testing.fixtures import checkpoint_tree, random_params, write_checkpoint
from tests.helpers import assert_one_line_error, json_error, problem_lines, run_console_script
from tests.helpers import held_console_script as _held

CONVERT_HOLD = "convert-before-rename"


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


@pytest.mark.parametrize("case", BAD)
def test_inspect_and_convert_reject_bad_input(cli, bad_inputs, tmp_path: Path, case: str):
    assert_one_line_error(cli("inspect", bad_inputs[case]), stdout_empty=False)
    out = tmp_path / "out"
    assert_one_line_error(cli("convert", bad_inputs[case], out))
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["random", "pickle.pt", "missing_tensor", "directory"])
def test_verify_rejects_bad_checkpoints(cli, bad_inputs, converted, tiny_checkpoint, case: str):
    hf_dir = converted(tiny_checkpoint())
    assert_one_line_error(cli("verify", bad_inputs[case], hf_dir))


@pytest.mark.parametrize("case", ["corrupt_shape", "missing_tensor", "extra_tensor"])
def test_inspect_shows_the_tree_then_every_problem(cli, bad_inputs, case: str):
    shown = cli("inspect", bad_inputs[case])
    assert_one_line_error(shown, stdout_empty=False)
    assert "backbone" in shown.stdout and "problems" in shown.stdout
    report = json.loads(cli("inspect", bad_inputs[case], "--json").stdout)
    assert report["params"] and len(report["problems"]) == 1


def _degenerate(tmp_path: Path, case: str) -> Path:
    params = random_params(VARIANTS["v1-tiny"])
    visual, text = "backbone/clip/visual", "backbone/clip/text"
    query = f"{visual}/transformer/resblocks_0/attn/query/kernel"
    if case == "zero_heads":
        params[query] = np.zeros((128, 0, 64), np.float32)
    elif case == "zero_patch":
        params[f"{visual}/conv1/kernel"] = np.zeros((0, 0, 3, 128), np.float32)
    elif case == "heads_do_not_divide":
        params[query] = np.zeros((128, 3, 42), np.float32)
    elif case == "vocab":
        params[f"{text}/token_embedding/embedding"] = np.zeros((1000, 32), np.float32)
    elif case == "context_0":
        params[f"{text}/positional_embedding"] = np.zeros((0, 32), np.float32)
    elif case == "image_0":
        params[f"{visual}/positional_embedding"] = np.zeros((1, 128), np.float32)
    elif case == "no_positions":
        params[f"{visual}/positional_embedding"] = np.zeros((0, 128), np.float32)
    path = write_checkpoint(tmp_path / case, checkpoint_tree(params))
    if case in ("S0", "U1", "object"):  # a leaf record written by hand: no writer makes these
        tree = msgpack.unpackb(path.read_bytes(), ext_hook=msgpack.ExtType)
        data = {"S0": b"", "U1": b"\0" * 4, "object": b"\0" * 8}[case]
        leaf = msgpack.ExtType(1, msgpack.packb([[1], case, data]))
        tree["params"]["class_head"]["logit_shift"]["bias"] = leaf
        path.write_bytes(msgpack.packb(tree))
    return path


DEGENERATE = {
    "S0": "not floating point", "U1": "not floating point", "object": "not floating point",
    "zero_heads": "0 heads",
    "zero_patch": "patch size 0", "heads_do_not_divide": "width / heads", "vocab": "49408",
    "context_0": "context length", "image_0": "image size 0", "no_positions": "position rows",
}  # fmt: skip


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_tensors_are_named_at_inspect_and_convert(cli, tmp_path: Path, case: str):
    ckpt = _degenerate(tmp_path, case)
    for args in (["inspect", ckpt], ["convert", ckpt, tmp_path / "out"]):
        result = cli(*args)
        assert_one_line_error(result, stdout_empty=args[0] == "convert")
        assert DEGENERATE[case] in result.stdout + result.stderr, (case, result.stderr)
    assert not (tmp_path / "out").exists()


def test_key_names_are_printed_literally(cli, tmp_path: Path):
    params = random_params(VARIANTS["v1-tiny"])
    params["[/bold]"] = np.zeros(2, np.float32)
    params["[blink]x[/blink]"] = np.zeros(2, np.float32)
    result = cli("inspect", write_checkpoint(tmp_path / "markup", checkpoint_tree(params)))
    assert_one_line_error(result, stdout_empty=False)
    assert "[/bold]" in result.stdout and "[blink]x[/blink]" in result.stdout


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

    def interrupted(path, tensors, dtype, on_written=lambda _: None, observer=None):
        def boom(nbytes):
            raise KeyboardInterrupt  # in the main thread, after the first piece is written

        return real(path, tensors, dtype, boom, observer)

    monkeypatch.setattr(writer, "write_safetensors", interrupted)
    result = cli("convert", tiny_checkpoint(), tmp_path / "out", *(["--json"] if json_mode else []))
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert list(tmp_path.iterdir()) == []
    if json_mode:  # the CI contract: one error object on stdout, same code
        assert json_error(result.stdout, 130)["kind"] == "interrupted"
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
        assert_one_line_error(result)
        assert "No space left" in result.stderr
        assert list(small.iterdir()) == []


def test_read_only_output_location(cli, tiny_checkpoint, tmp_path: Path):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        result = cli("convert", tiny_checkpoint(), read_only / "out")
        assert_one_line_error(result)
        assert list(read_only.iterdir()) == []


def test_output_is_a_file(cli, tiny_checkpoint, tmp_path: Path):
    target = tmp_path / "file"
    target.write_text("x")
    assert_one_line_error(cli("convert", tiny_checkpoint(), target, "--overwrite"))
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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_termination_signals_mid_convert_clean_up(tiny_checkpoint, tmp_path: Path, signum: int):
    """Ctrl-C, CI cancellation / docker stop, a closed terminal: all end like Ctrl-C, with
    128+N, one line, and nothing left (the temporary directory exists when the signal comes)."""
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    proc = _held(["convert", tiny_checkpoint(), out_parent / "model"], CONVERT_HOLD, tmp_path / "h")
    assert any(".owlvit-tmp-" in p.name for p in out_parent.iterdir())
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    name = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
    assert problem_lines(err) == [f"error: interrupted{name}"]
    assert list(out_parent.iterdir()) == []


def test_two_runs_racing_for_one_output_exactly_one_wins(tiny_checkpoint, tmp_path: Path):
    """The first run is held after writing, before its rename; a second run takes OUT; the
    first then fails and leaves the second's output as it is."""
    out = tmp_path / "model"
    hold = tmp_path / "h"
    first = _held(["convert", tiny_checkpoint(seed=1), out], CONVERT_HOLD, hold)
    second = run_console_script("convert", tiny_checkpoint(), out)
    assert second.returncode == 0, second.stderr
    winner = (out / RECORD_FILE).read_text()
    hold.unlink()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 2 and "filled by someone else" in err, err
    assert (out / RECORD_FILE).read_text() == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_ctrl_c_inside_a_gc_callback_still_ends_verify(converted, tiny_checkpoint, tmp_path):
    """jax registers a GC callback; a KeyboardInterrupt raised there is printed and dropped by
    Python. The run is held inside a GC callback when Ctrl-C comes: it must still end with
    130 and write no report."""
    import shutil

    ckpt = tiny_checkpoint()
    hf_dir = tmp_path / "model"
    shutil.copytree(converted(ckpt), hf_dir)
    proc = _held(["verify", ckpt, hf_dir, "--record"], "verify-compared@gc", tmp_path / "h")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not (hf_dir / VERIFICATION_FILE).exists()


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_closed_stdout_exits_0_quietly(tiny_checkpoint, json_flag: list[str]):
    """`owlvit inspect CKPT | head -1`: the reader is gone before owlvit writes (its end of
    the pipe is closed before the process starts, so this cannot race)."""
    import os
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "owlvit_cli", "inspect", str(tiny_checkpoint()), *json_flag],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_permission_denied_is_one_line(cli, tiny_checkpoint, monkeypatch):
    """Root reads anything, so the kernel's EACCES is injected where the file is opened."""
    from owlvit_cli.checkpoint import reader as checkpoint

    real_open = checkpoint.os.open
    target = tiny_checkpoint()

    def denied(path, *args, **kwargs):
        if Path(path) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.os, "open", denied)
    result = cli("inspect", target)
    assert_one_line_error(result)
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
    assert_one_line_error(result)
    assert "cannot load the model" in result.stderr


def test_verify_refuses_unwritable_outputs_before_running(
    cli, converted, tiny_checkpoint, tmp_path
):
    ckpt = tiny_checkpoint()
    hf_dir = converted(ckpt)
    missing = tmp_path / "missing" / "out.npz"
    result = cli("verify", ckpt, hf_dir, "--save-outputs", missing)
    assert_one_line_error(result)
    assert "no such directory" in result.stderr and "timings" not in result.stdout


def test_outputs_never_overwrite_an_input_image(cli, converted, tiny_checkpoint, tmp_path):
    import shutil

    from tests.helpers import SAMPLE

    ckpt = tiny_checkpoint()
    photo = tmp_path / "photo.png"
    shutil.copy(SAMPLE, photo)
    hf_dir = converted(ckpt)
    verify = cli("verify", ckpt, hf_dir, "--image", photo, "--save-viz", photo)
    detect = cli("detect", hf_dir, photo, "--query", "a cat", "--output", photo)
    for result in (verify, detect):
        assert_one_line_error(result)
        assert "input" in result.stderr
    assert photo.read_bytes() == SAMPLE.read_bytes()


def test_verify_record_into_read_only_model_dir(cli, converted, tiny_checkpoint, tmp_path):
    import shutil

    ckpt = tiny_checkpoint()
    hf_dir = tmp_path / "model"
    shutil.copytree(converted(ckpt), hf_dir)
    bind = subprocess.run(["mount", "--bind", "-o", "ro", str(hf_dir), str(hf_dir)],
                          capture_output=True, check=False)  # fmt: skip
    if bind.returncode != 0:
        pytest.skip("cannot bind-mount read-only here (needs root)")
    try:
        result = cli("verify", ckpt, hf_dir, "--record")
    finally:
        subprocess.run(["umount", str(hf_dir)], check=False)
    assert_one_line_error(result)
    assert "cannot write here" in result.stderr


def test_npz_named_npy_is_one_line(cli, converted, tiny_checkpoint, tmp_path: Path):
    ckpt = tiny_checkpoint()
    fake = tmp_path / "pixels.npy"
    with fake.open("wb") as handle:
        np.savez(handle, pixels=np.zeros((64, 64, 3), np.float32))
    result = cli("verify", ckpt, converted(ckpt), "--image", fake)
    assert_one_line_error(result)
    assert ".npz archive" in result.stderr


def test_overwrite_of_the_directory_holding_the_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    ckpt = downloads / "ckpt"
    ckpt.write_bytes(tiny_checkpoint().read_bytes())
    (downloads / "notes.txt").write_text("mine")
    for flag in ("--overwrite", "--force-overwrite"):
        result = run_console_script("convert", ckpt, downloads, flag)
        assert result.returncode == 2 and "destroy" in result.stderr, result.stderr
    assert sorted(p.name for p in downloads.iterdir()) == ["ckpt", "notes.txt"]
    nested = run_console_script("convert", ckpt, tmp_path / "new" / "dirs" / "model")
    assert nested.returncode == 0, nested.stderr
    assert (tmp_path / "new" / "dirs" / "model" / RECORD_FILE).exists()


def _end_held(proc: subprocess.Popen, hold: Path, seconds: float) -> tuple[str, str, float]:
    """Wait at most `seconds` for a held run to end (its output, and how long it took); a run
    still held then is released and killed, and the test fails."""
    import time

    started = time.monotonic()
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        hold.unlink(missing_ok=True)
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running {seconds} s after the signal: {out!r} {err!r}")
    return out, err, time.monotonic() - started


# Far above the main thread's reaction (WAIT_SECONDS) on a busy machine, far below the time
# CI gives a run between SIGTERM and SIGKILL.
SIGNAL_ACTS_WITHIN = 5.0


@pytest.mark.parametrize("json_mode", [False, True])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_a_run_held_in_a_native_call(
    tiny_checkpoint, tmp_path: Path, signum: int, json_mode: bool
):
    """The run waits inside one native call (as in a forward pass or a resize) that no Python
    handler can cut short: the signal still ends it at once, with 128+N, one line (and the
    error object under --json), and the temporary directory removed."""
    out_parent = tmp_path / "outputs"
    args = ["convert", tiny_checkpoint(), out_parent / "new" / "model"]
    hold = tmp_path / "h"
    proc = _held([*args, *(["--json"] if json_mode else [])], f"{CONVERT_HOLD}@native", hold)
    assert any(".owlvit-tmp-" in p.name for p in (out_parent / "new").iterdir())
    proc.send_signal(signum)
    out, err, _ = _end_held(proc, hold, SIGNAL_ACTS_WITHIN)
    assert proc.returncode == 128 + signum, err
    name = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
    assert problem_lines(err) == [f"error: interrupted{name}"]
    assert list(tmp_path.iterdir()) == [hold]  # the parents made for OUT are gone too
    if json_mode:
        assert json.loads(out)["error"] == {
            "code": 128 + signum,
            "kind": "interrupted",
            "message": f"interrupted{name}",
        }
    else:
        assert out == ""


def test_a_signal_during_overwrite_keeps_the_old_output(tiny_checkpoint, converted, tmp_path):
    """--overwrite held natively with the new output complete: the old one stays as it was."""
    import shutil

    out = tmp_path / "model"
    shutil.copytree(converted(tiny_checkpoint()), out)
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    hold = tmp_path / "h"
    args = ["convert", tiny_checkpoint(seed=1), out, "--overwrite"]
    proc = _held(args, f"{CONVERT_HOLD}@native", hold)
    proc.send_signal(signal.SIGTERM)
    _end_held(proc, hold, SIGNAL_ACTS_WITHIN)
    assert proc.returncode == 143
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h", "model"]


def test_a_signal_ends_verify_held_in_a_native_call(converted, tiny_checkpoint, tmp_path):
    import shutil

    ckpt = tiny_checkpoint()
    hf_dir = tmp_path / "model"
    shutil.copytree(converted(ckpt), hf_dir)
    hold = tmp_path / "h"
    args = ["verify", ckpt, hf_dir, "--record", "--save-outputs", tmp_path / "o.npz", "--json"]
    proc = _held(args, "verify-compared@native", hold)
    proc.send_signal(signal.SIGTERM)
    out, err, _ = _end_held(proc, hold, SIGNAL_ACTS_WITHIN)
    assert proc.returncode == 143, err
    assert json.loads(out)["error"]["code"] == 143
    assert not (hf_dir / VERIFICATION_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h", "model"]


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT])
def test_a_signal_ignored_by_the_caller_stays_ignored(tiny_checkpoint, tmp_path: Path, signum):
    """`nohup owlvit convert …` (SIGHUP), a background job of a script (SIGINT): the terminal
    closing or a Ctrl-C meant for the foreground does not end the run."""

    hold = tmp_path / "h"
    trap = f"trap '' {signal.Signals(signum).name[3:]}"
    proc = _held(["convert", tiny_checkpoint(), tmp_path / "model"], CONVERT_HOLD, hold, trap)
    proc.send_signal(signum)
    hold.unlink()
    _, err, _ = _end_held(proc, hold, 120)
    assert proc.returncode == 0, err
    assert (tmp_path / "model" / RECORD_FILE).exists()


@pytest.mark.parametrize("point", ["startup", "command-start", "command-start@native"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_start_up_ends_the_run_with_one_code(
    tiny_checkpoint, tmp_path: Path, point: str, signum: int
):
    """Before the command line is parsed, and before the command's work: the exit code, the
    line and the JSON error object agree."""
    hold = tmp_path / "h"
    proc = _held(["inspect", tiny_checkpoint(), "--json"], point, hold)
    proc.send_signal(signum)
    out, err, _ = _end_held(proc, hold, SIGNAL_ACTS_WITHIN)
    assert proc.returncode == 128 + signum, err
    assert json.loads(out)["error"]["code"] == 128 + signum
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("command", [["inspect"], ["convert"]])  # teardown, then a fast exit
def test_a_signal_after_the_result_keeps_its_code(tiny_checkpoint, tmp_path: Path, command):
    """The JSON object saying 0 is out when the signal comes: the exit code stays 0."""
    args = [*command, tiny_checkpoint(), *([tmp_path / "out"] if command == ["convert"] else [])]
    hold = tmp_path / "h"
    proc = _held([*args, "--json"], "finished", hold)
    proc.send_signal(signal.SIGTERM)
    out, err, _ = _end_held(proc, hold, SIGNAL_ACTS_WITHIN)
    assert proc.returncode == 0 and "error" not in json.loads(out), err


def test_a_signal_at_an_orbax_commands_start_up(tmp_path: Path):
    """An Orbax checkpoint's reader loads tensorstore, the slowest start-up there is."""
    from owlvit_cli.testing.fixtures import build_checkpoint

    ckpt = build_checkpoint(tmp_path / "orbax", VARIANTS["v1-tiny"], "current", orbax={})
    hold = tmp_path / "h"
    proc = _held(["convert", ckpt, tmp_path / "out", "--json"], "command-start", hold)
    proc.send_signal(signal.SIGTERM)
    out, err, _ = _end_held(proc, hold, SIGNAL_ACTS_WITHIN)
    assert proc.returncode == 143, err
    assert json.loads(out)["error"]["code"] == 143
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["inspect"], ["inspect", "--json"], ["--help"], ["--version"]])
def test_stdout_that_takes_no_bytes_is_an_output_error(tiny_checkpoint, args: list[str]):
    """`owlvit … > /dev/full` (a full disk): exit 2 and one line, not "check failed" or a bug."""
    import sys

    command = [*args[:1], str(tiny_checkpoint()), *args[1:]] if args[0] == "inspect" else args
    with Path("/dev/full").open("w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "owlvit_cli", *command],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: cannot write to stdout (No space left on device)"
    ]


def _fill(directory: Path) -> None:
    """Leave no free byte on the filesystem holding `directory`."""
    with (directory / "filler").open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)


@pytest.mark.parametrize("what", ["--save-outputs", "--record"])
def test_disk_full_under_verify_outputs(converted, tiny_checkpoint, tmp_path: Path, what: str):
    import shutil

    ckpt = tiny_checkpoint()
    with _tmpfs(tmp_path / "small", "size=32m") as small:
        hf_dir = small / "model"
        shutil.copytree(converted(ckpt), hf_dir)
        _fill(small)
        flags = ["--save-outputs", small / "o.npz"] if what == "--save-outputs" else ["--record"]
        result = run_console_script("verify", ckpt, hf_dir, *flags)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1:] == [
            f"error: {small / 'o.npz' if what == '--save-outputs' else hf_dir / VERIFICATION_FILE}"
            ": cannot write (No space left on device)"
        ]
        assert sorted(p.name for p in small.iterdir()) == ["filler", "model"]
        assert sorted(p.name for p in hf_dir.iterdir()) == sorted(
            p.name for p in converted(ckpt).iterdir()
        )


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_signal_while_stdout_is_blocked(tiny_checkpoint, tmp_path: Path, json_flag: list[str]):
    """The reader of stdout stopped reading (a paused pager) and the result does not fit the
    pipe: the command's thread waits in write(2), holding the output. A signal still ends the
    run at once, with one line; no second JSON object goes after the half-written one."""
    import fcntl
    import sys

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "owlvit_cli", "inspect", str(tiny_checkpoint()), *json_flag],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_until_writing_to_a_pipe(proc)
        proc.send_signal(signal.SIGTERM)
        _, err, _ = _end_held(proc, tmp_path / "none", SIGNAL_ACTS_WITHIN)
    finally:
        os.close(write_end)
        os.close(read_end)
    assert proc.returncode == 143
    assert err.strip().splitlines() == ["error: interrupted (SIGTERM)"]


def _wait_until_writing_to_a_pipe(proc: subprocess.Popen) -> None:
    """Until one of the process's threads sleeps in the kernel's pipe_write (Linux)."""
    import time

    deadline = time.monotonic() + 120
    tasks = Path(f"/proc/{proc.pid}/task")
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if any("pipe_write" in (t / "wchan").read_text() for t in tasks.iterdir()):
                return
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"never blocked writing to stdout: {proc.communicate()}")
