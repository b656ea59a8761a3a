"""Orbax checkpoint directories, written by flax's and orbax's own save functions: the same
index, layout and tensors as the msgpack file of the same parameters, byte-identical
conversions, workdirs of several steps, and bad directories refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from owlvit_cli.checkpoint.reader import open_checkpoint
from owlvit_cli.convert.run import convert_checkpoint
from owlvit_cli.errors import BadInputError, CheckpointError
from owlvit_cli.model.model_dir import RECORD_FILE, WEIGHTS_FILE
from owlvit_cli.model.spec import VARIANTS
from owlvit_cli.testing.fixtures import (
    checkpoint_tree,
    random_params,
    write_checkpoint,
    write_orbax_checkpoint,
)
from tests.helpers import (
    REFERENCE_NAMES,
    held_console_script,
    problem_lines,
    reference_checkpoint,
    run_console_script,
)

# (writer, OCDBT, zarr v3): flax's defaults, orbax's defaults, and orbax's other two formats.
WRITERS = {
    "flax": dict(writer="flax"),
    "orbax_ocdbt": dict(writer="orbax", ocdbt=True),
    "orbax_plain": dict(writer="orbax", ocdbt=False),
    "orbax_zarr3": dict(writer="orbax", ocdbt=False, zarr3=True),
}
# Every layout, every dtype and every writer appear at least once, in tiny models.
CASES = [
    ("v2-tiny", "v1", "bfloat16", "flax"),
    ("v1-tiny", "v2", "float16", "orbax_ocdbt"),
    ("v2-tiny", "current", "float32", "orbax_plain"),
    ("v1-tiny", "v1", "float32", "orbax_zarr3"),
    ("v2-tiny", "v2", "float32", "flax"),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, Path]]:
    """(msgpack file, Orbax checkpoint directory) holding the same state, built once each."""
    root = tmp_path_factory.mktemp("orbax")
    cache: dict[tuple[str, ...], tuple[Path, Path]] = {}

    def make(variant: str, layout: str, dtype: str, writer: str) -> tuple[Path, Path]:
        key = (variant, layout, dtype, writer)
        if key not in cache:
            state = checkpoint_tree(random_params(VARIANTS[variant], 3), layout, dtype)
            name = "-".join(key)
            msgpack_file = write_checkpoint(root / f"{name}.msgpack", state)
            orbax_dir = write_orbax_checkpoint(root / name, state, step=7, **WRITERS[writer])
            cache[key] = msgpack_file, orbax_dir
        return cache[key]

    return make


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_orbax_index_and_tensors_match_msgpack(pair, case):
    msgpack_file, orbax_dir = pair(*case)
    with open_checkpoint(msgpack_file) as expected, open_checkpoint(orbax_dir) as got:
        assert (got.format, expected.format) == ("orbax", "msgpack")
        assert (got.layout, got.root, got.other_top_level) == (
            expected.layout,
            expected.root,
            expected.other_top_level,
        )
        assert list(got.tensors) == sorted(expected.tensors) or set(got.tensors) == set(
            expected.tensors
        )
        for entry in expected:
            mine = got[entry.path]
            assert (mine.source_path, mine.shape, mine.dtype_name, mine.record.nbytes) == (
                entry.source_path,
                entry.shape,
                entry.dtype_name,
                entry.record.nbytes,
            )
            value = got.read(entry.path)
            assert value.dtype == entry.dtype
            np.testing.assert_array_equal(value, expected.read(entry.path))


@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: "-".join(c))
def test_conversion_is_byte_identical_to_msgpack(pair, case, tmp_path: Path):
    msgpack_file, orbax_dir = pair(*case)
    out_dtype = "float16" if case[2] == "float32" else "float32"  # a cast on the way too
    for dtype in sorted({case[2], out_dtype}):
        a = convert_checkpoint(msgpack_file, tmp_path / f"m-{dtype}", dtype=dtype)
        b = convert_checkpoint(orbax_dir, tmp_path / f"o-{dtype}", dtype=dtype)
        assert (a.output / WEIGHTS_FILE).read_bytes() == (b.output / WEIGHTS_FILE).read_bytes()
        assert a.files == b.files
        record = json.loads((b.output / RECORD_FILE).read_text())
        assert record["source"]["format"] == "orbax"
        assert record["source"]["file"] == orbax_dir.name
        assert record["layout"] == case[1]
        for name in a.files:  # everything else derived from the tensors agrees too
            if name not in (WEIGHTS_FILE, RECORD_FILE):
                assert (a.output / name).read_bytes() == (b.output / name).read_bytes(), name


def _reference_state(name: str) -> dict:
    from flax import serialization

    return serialization.msgpack_restore(reference_checkpoint(name).read_bytes())


@pytest.mark.parametrize("name", sorted(REFERENCE_NAMES))
def test_scenic_reference_checkpoints_as_orbax(name: str, tmp_path: Path):
    """The reference checkpoints re-saved by flax's save_checkpoint convert to the same bytes."""
    workdir = tmp_path / "workdir"
    write_orbax_checkpoint(workdir, _reference_state(name), writer="flax", step=100)
    a = convert_checkpoint(reference_checkpoint(name), tmp_path / "m")
    b = convert_checkpoint(workdir / "checkpoint_100", tmp_path / "o")
    assert (a.output / WEIGHTS_FILE).read_bytes() == (b.output / WEIGHTS_FILE).read_bytes()
    assert b.record["layout"] == REFERENCE_NAMES[name][1]


def test_convert_verify_workdir_through_console_script(tmp_path: Path):
    """`owlvit convert WORKDIR OUT --verify` on a flax workdir: latest step, said on stderr."""
    workdir = tmp_path / "workdir"
    state = _reference_state("v2_release")
    for step in (10, 200, 30):
        write_orbax_checkpoint(workdir, state, writer="flax", step=step)
    out = tmp_path / "out"
    result = run_console_script("convert", workdir, out, "--verify", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["verification"]["passed"] is True
    assert payload["source"]["file"] == "checkpoint_200"
    assert "checkpoint_200 (step 200, the latest of 3" in result.stderr
    recorded = json.loads((out / "owlvit_verification.json").read_text())
    assert recorded["passed"] is True


def test_step_picks_a_checkpoint_and_unknown_steps_are_refused(tmp_path: Path):
    workdir = tmp_path / "workdir"
    params = random_params(VARIANTS["v1-tiny"])
    write_checkpoint(workdir / "checkpoint_5", checkpoint_tree(params, "v2"))  # msgpack too
    write_orbax_checkpoint(workdir, checkpoint_tree(params, "current"), writer="flax", step=9)
    (workdir / "checkpoint_12.orbax-checkpoint-tmp-1").mkdir()  # an unfinished save: skipped

    latest = run_console_script("inspect", workdir, "--json")
    assert latest.returncode == 0, latest.stderr
    assert json.loads(latest.stdout)["layout"] == "current"
    assert json.loads(latest.stdout)["format"] == "orbax"
    assert "step 9, the latest of 2" in latest.stderr

    chosen = run_console_script("inspect", workdir, "--step", "5", "--json")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["layout"] == "v2"
    assert json.loads(chosen.stdout)["format"] == "msgpack"
    assert "step 5, chosen with --step of 2" in chosen.stderr

    out = tmp_path / "out"
    for args, message in [
        (("inspect", workdir, "--step", "6"), "no checkpoint for step 6 (steps: 5, 9)"),
        (("inspect", workdir / "checkpoint_9", "--step", "9"), "is one checkpoint"),
        (("inspect", workdir / "checkpoint_5", "--step", "5"), "needs a workdir"),
        (("convert", workdir, out, "--step", "6"), "no checkpoint for step 6"),
        (("verify", workdir, out, "--step", "6"), "no checkpoint for step 6"),
    ]:
        result = run_console_script(*args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert len(problem_lines(result.stderr)) == 1, result.stderr
    assert not out.exists()


def test_orbax_checkpoint_manager_step_directory(tmp_path: Path):
    """orbax's CheckpointManager keeps each step as `N/<item>/`: the item is read."""
    import orbax.checkpoint as ocp

    state = checkpoint_tree(random_params(VARIANTS["v1-tiny"]), "v2")
    with ocp.CheckpointManager(tmp_path / "run") as manager:
        manager.save(4, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
    with open_checkpoint(tmp_path / "run") as ckpt:
        assert ckpt.path == tmp_path / "run" / "4" / "default"
        assert ckpt.layout == "v2"


def test_listing_reads_no_array_data(pair, tmp_path: Path):
    """inspect reads `_METADATA` and zarr headers only: with every chunk gone it still lists."""
    _, orbax_dir = pair("v2-tiny", "current", "float32", "orbax_plain")
    bare = tmp_path / "bare"
    shutil.copytree(orbax_dir, bare, ignore=shutil.ignore_patterns("0", "0.*", "c"))
    result = run_console_script("inspect", bare, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_tensors"] == 97


def test_msgpack_path_never_imports_tensorstore(tmp_path: Path):
    path = write_checkpoint(tmp_path / "c", checkpoint_tree(random_params(VARIANTS["v1-tiny"])))
    code = (
        "import sys\n"
        "from owlvit_cli.checkpoint.reader import open_checkpoint\n"
        f"open_checkpoint({str(path)!r}).read('backbone/clip/logit_scale')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorstore', 'orbax')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _damage(kind: str, source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    if kind == "missing_array":  # an array's folder gone
        shutil.rmtree(next(target.glob("params.*.logit_scale.kernel")))
    elif kind == "missing_chunk":  # its header kept, its data gone: never read as zeros
        next(target.glob("params.*.token_embedding.embedding")).joinpath("0.0").unlink()
    elif kind == "corrupt_metadata":
        (target / "_METADATA").write_text('{"tree_metadata": {"x": ')
    elif kind == "ocdbt_missing_data":  # the manifest points to data files that are gone
        for data in target.glob("**/d/*"):
            data.unlink()
    elif kind == "ocdbt_corrupt_manifest":
        (target / "manifest.ocdbt").write_bytes(b"\0" * 64)
    elif kind == "hostile_key":  # a key path that would leave the directory
        metadata = json.loads((target / "_METADATA").read_text())
        first = next(iter(metadata["tree_metadata"].values()))
        first["key_metadata"][-1]["key"] = "../../outside"
        (target / "_METADATA").write_text(json.dumps(metadata))
    elif kind == "neither":
        shutil.rmtree(target)
        (target / "sub").mkdir(parents=True)
        (target / "notes.txt").write_text("hello")
    return target


DAMAGE = {
    "missing_array": ("orbax_plain", "missing"),
    "missing_chunk": ("orbax_plain", "cannot read array"),
    "corrupt_metadata": ("orbax_plain", "not valid JSON"),
    "ocdbt_missing_data": ("orbax_ocdbt", ""),
    "ocdbt_corrupt_manifest": ("orbax_ocdbt", "OCDBT"),
    "neither": ("orbax_plain", "neither an Orbax checkpoint"),
    "hostile_key": ("orbax_plain", "refusing key path"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_directories_one_line_exit_2_nothing_written(pair, kind: str, tmp_path: Path):
    writer, message = DAMAGE[kind]
    _, orbax_dir = pair("v2-tiny", "current", "float32", writer)
    damaged = _damage(kind, orbax_dir, tmp_path / "damaged")
    out = tmp_path / "out"
    result = run_console_script("convert", damaged, out)
    assert result.returncode == 2, result.stderr
    lines = problem_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged"]  # no OUT, no temp sibling
    with pytest.raises(CheckpointError), open_checkpoint(damaged) as ckpt:
        ckpt.params_tree()


def test_step_with_a_file_is_bad_input(tmp_path: Path):
    path = write_checkpoint(tmp_path / "c", checkpoint_tree(random_params(VARIANTS["v1-tiny"])))
    with pytest.raises(BadInputError, match="needs a workdir"):
        open_checkpoint(path, step=3)


def _link_tree(source: Path, target: Path) -> Path:
    """What `cp -rs` makes (and, with one directory itself a link, a Hub cache snapshot):
    new directories, every file a link to the original."""
    for directory, _, names in os.walk(source):
        inside = target / Path(directory).relative_to(source)
        inside.mkdir(parents=True, exist_ok=True)
        for name in names:
            (inside / name).symlink_to(Path(directory, name))
    linked_dir = target / "d"
    if linked_dir.is_dir():  # OCDBT's data files: the directory itself a link
        shutil.rmtree(linked_dir)
        linked_dir.symlink_to(source / "d", target_is_directory=True)
    return target


def _source_record(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["source"]


@pytest.mark.parametrize("writer", ["orbax_ocdbt", "orbax_plain"])
def test_a_checkpoint_made_of_links_records_the_bytes_it_reads(pair, writer, tmp_path: Path):
    _, real = pair("v2-tiny", "current", "float32", writer)
    linked = _link_tree(real, tmp_path / "linked")
    real_record = _source_record(run_console_script("convert", real, tmp_path / "a", "--json"))
    linked_record = _source_record(run_console_script("convert", linked, tmp_path / "b", "--json"))
    on_disk = sum(p.stat().st_size for p in real.rglob("*") if p.is_file())
    assert linked_record["size"] == real_record["size"] == on_disk
    assert linked_record["sha256"] == real_record["sha256"]
    # Another checkpoint of links is not taken for the one converted.
    _, other = pair("v2-tiny", "v2", "float32", writer)
    other_linked = _link_tree(other, tmp_path / "other")
    result = run_console_script("verify", other_linked, tmp_path / "b")
    assert result.returncode == 1 and "was converted from" in result.stderr, result.stderr


def _rewrite(how: str, ckpt: Path, other: Path) -> None:
    if how == "saved_again":  # another state saved under the same name
        shutil.rmtree(ckpt)
        shutil.copytree(other, ckpt)
    else:  # one array's data edited in place, same size
        chunk = next(ckpt.glob("params.*.token_embedding.embedding/0*"))
        data = bytearray(chunk.read_bytes())
        data[-1] ^= 0xFF
        chunk.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["saved_again", "edited_in_place"])
def test_a_checkpoint_rewritten_during_convert_is_refused(pair, how: str, tmp_path: Path):
    """Held once every tensor is read: the directory changes, then convert goes on."""
    _, original = pair("v2-tiny", "current", "float32", "orbax_plain")
    _, other = pair("v2-tiny", "v2", "float32", "orbax_plain")
    ckpt = tmp_path / "ckpt"
    shutil.copytree(original, ckpt)
    hold = tmp_path / "hold"
    proc = held_console_script(["convert", ckpt, tmp_path / "out"], "convert-read", hold)
    _rewrite(how, ckpt, other)
    hold.unlink()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert len(problem_lines(err)) == 1 and "changed while being read" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no OUT, no temp sibling


def _hostile(kind: str, ckpt: Path) -> None:
    """Replace one file of a checkpoint with something no reader may open or read whole."""
    files = {
        "metadata": ckpt / "_METADATA",
        "manifest": ckpt / "manifest.ocdbt",
        "data": next(ckpt.glob("d/*"), ckpt),
        "zarray": next(ckpt.glob("*/.zarray"), ckpt),
        "chunk": next(ckpt.glob("params.*/0*"), ckpt),
    }
    where, _, what = kind.partition(":")
    file = files[where]
    file.unlink()
    if what == "fifo":
        os.mkfifo(file)
    elif what == "dev_zero":
        file.symlink_to("/dev/zero")
    elif what == "socket":
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(file))
    elif what == "loop":
        file.mkdir()
        (file / "up").symlink_to("..", target_is_directory=True)
    elif what == "broken_link":
        file.symlink_to(ckpt / "nowhere")
    elif what == "huge":  # sparse: costs no disk
        with open(file, "wb") as handle:
            handle.truncate(300 << 20)
    elif what == "deep":
        file.write_text("[" * 100_000 + "]" * 100_000)


HOSTILE = {
    "metadata:fifo": ("orbax_plain", "pipe (FIFO)"),
    "manifest:fifo": ("orbax_ocdbt", "pipe (FIFO)"),
    "data:fifo": ("orbax_ocdbt", "pipe (FIFO)"),
    "zarray:fifo": ("orbax_plain", "pipe (FIFO)"),
    "chunk:fifo": ("orbax_plain", "pipe (FIFO)"),
    "metadata:dev_zero": ("orbax_plain", "character device"),
    "metadata:socket": ("orbax_plain", "socket"),
    "chunk:loop": ("orbax_plain", "a loop"),
    "zarray:broken_link": ("orbax_plain", "broken link"),
    "metadata:huge": ("orbax_plain", "larger than"),
    "metadata:deep": ("orbax_ocdbt", "nested too deeply"),
    "zarray:deep": ("orbax_plain", "nested too deeply"),
}


@pytest.mark.parametrize("command", ["inspect", "convert"])
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_files_inside_a_checkpoint_are_refused_before_reading(
    pair, kind: str, command: str, tmp_path: Path
):
    writer, message = HOSTILE[kind]
    _, original = pair("v2-tiny", "current", "float32", writer)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(original, ckpt)
    _hostile(kind, ckpt)
    out = [tmp_path / "out"] if command == "convert" else []
    result = run_console_script(command, ckpt, *out, "--json", timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert json.loads(result.stdout)["error"]["code"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
