"""convert: the written directory loads offline in stock transformers and reproduces scenic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from owlvit_cli.convert.run import RECORD_FILE, convert_checkpoint
from owlvit_cli.errors import BadInputError, MappingError
from owlvit_cli.runtime.hf_model import load_hf_model, run_hf_detection, run_hf_image_only
from owlvit_cli.scenic.tokenizer import get_tokenizer as clip_simple_tokenizer
from tests.helpers import (
    REFERENCE_NAMES,
    reference_checkpoint,
    reference_io,
    run_console_script,
)

STOCK_TOL = {"pred_logits": 2e-4, "pred_boxes": 1e-3, "objectness_logits": 1e-3}
PATCHED_TOL = 1e-5


def _max_diff(name: str, got: np.ndarray, ref: np.ndarray, io: dict) -> float:
    if name == "pred_logits":  # padding queries: scenic −1e6, transformers finfo.min
        mask = np.broadcast_to(io["query_mask"].astype(bool)[:, None, :], ref.shape)
        return float(np.abs(got - ref)[mask].max())
    return float(np.abs(got - ref).max())


@pytest.mark.parametrize("name", sorted(REFERENCE_NAMES))
@pytest.mark.parametrize("patched", [False, True], ids=["stock", "scenic-semantics"])
def test_converted_reference_reproduces_scenic(converted, name: str, patched: bool):
    io = reference_io(name)
    model = load_hf_model(converted(reference_checkpoint(name)), scenic_semantics=patched)
    outputs = run_hf_detection(model, io["pixel_values_nchw"], io["input_ids"])
    names = ["pred_logits", "pred_boxes"] + (
        ["objectness_logits"] if "objectness_logits" in io else []
    )
    for key in names:
        diff = _max_diff(key, outputs[key], io[key], io)
        assert diff <= (PATCHED_TOL if patched else STOCK_TOL[key]), (key, diff)
    if patched:
        np.testing.assert_allclose(outputs["feature_map"], io["feature_map"], atol=PATCHED_TOL)
        image_only = run_hf_image_only(model, io["pixel_values_nchw"])
        np.testing.assert_allclose(
            image_only["class_embeddings_unnormalized"],
            io["class_embeddings_unnormalized"],
            atol=PATCHED_TOL,
        )


def test_stock_model_is_not_scenic_exact(converted):
    """The patch matters: without it the v2 objectness differs by more than 1e-5."""
    io = reference_io("v2_release")
    model = load_hf_model(converted(reference_checkpoint("v2_release")))
    outputs = run_hf_detection(model, io["pixel_values_nchw"], io["input_ids"])
    assert np.abs(outputs["objectness_logits"] - io["objectness_logits"]).max() > 1e-5


@pytest.mark.parametrize("name", sorted(REFERENCE_NAMES))
def test_saved_tokenizer_gives_reference_ids(converted, name: str, reference_manifest: dict):
    from transformers import AutoProcessor

    io = reference_io(name)
    processor = AutoProcessor.from_pretrained(converted(reference_checkpoint(name)))
    for b, queries in enumerate(reference_manifest["queries"]):
        for q, text in enumerate(queries):
            if text is None:
                continue
            ids = processor.tokenizer(text, padding="max_length", truncation=True)["input_ids"]
            assert ids == io["input_ids"][b, q].tolist(), text


ORDINARY_QUERIES = [
    "Dog!",
    "a photo of a cat",
    "hello!world",
    "",
    "!",
    "café   dog",
    "A RED car",
    "  spaces\tand\nnewlines ",
    "don't",
    "3 apples",
    "über-cool",
]


def test_tokenizer_matches_clip_for_ordinary_queries(converted, tiny_checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted(tiny_checkpoint()))
    reference = clip_simple_tokenizer()
    for text in ORDINARY_QUERIES:
        expected = ([49406, *reference.encode(text), 49407] + [0] * 16)[:16]
        got = tokenizer(text, padding="max_length", truncation=True)["input_ids"]
        assert got == expected, text
    assert tokenizer("Dog!", padding="max_length")["input_ids"][:5] == [49406, 1929, 256, 49407, 0]


def test_tokenizer_truncation_differs_by_design(converted, tiny_checkpoint):
    """transformers keeps EOT when truncating; scenic cuts it off."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted(tiny_checkpoint()))
    text = (
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    )
    got = tokenizer(text, padding="max_length", truncation=True)["input_ids"]
    scenic = [49406, *clip_simple_tokenizer().encode(text)][:16]
    assert got[:15] == scenic[:15] and got[15] == 49407 and scenic[15] != 49407


def test_vocab_files_are_openai_clip(converted, tiny_checkpoint):
    out = converted(tiny_checkpoint())
    vocab = json.loads((out / "vocab.json").read_text())
    merges = (out / "merges.txt").read_text().splitlines()
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["!"] == 0
    assert merges[0].startswith("#version") and len(merges) - 1 == 48894


def test_output_directory_contents_and_record(converted, tiny_checkpoint):
    import hashlib

    ckpt = tiny_checkpoint("v2-tiny", "v2")
    out = converted(ckpt)
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        RECORD_FILE,
        "tokenizer_config.json",
        "preprocessor_config.json",
    } <= names
    assert not any(".owlvit-tmp-" in n for n in names)
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["source"] == {
        "file": ckpt.name,
        "path": os.path.relpath(ckpt, out),  # names it for a later command, not this machine
        "format": "msgpack",
        "size": ckpt.stat().st_size,
        "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
    }
    assert record["layout"] == "v2" and record["version"] == 2 and record["dtype"] == "float32"
    assert record["model_class"] == "Owlv2ForObjectDetection"
    assert "owlv2.visual_projection.weight" in record["generated"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "owlv2"
    assert config["text_config"]["num_attention_heads"] == 2
    with safe_open(out / "model.safetensors", "np") as weights:
        eye = weights.get_tensor("owlv2.visual_projection.weight")
        np.testing.assert_array_equal(eye, np.eye(*eye.shape, dtype=np.float32))


def test_processor_resizes_to_the_model_size(converted, tiny_checkpoint):
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(converted(tiny_checkpoint()))
    image = Image.new("RGB", (50, 30), (200, 10, 10))
    batch = processor(text=[["a cat", "a dog"]], images=image, return_tensors="pt")
    assert tuple(batch["pixel_values"].shape) == (1, 3, 64, 64)
    # padded bottom/right (not stretched): the bottom rows are the pad colour, not red
    pixels = batch["pixel_values"][0]
    assert pixels[0, 0, 0] > 1.0 and abs(float(pixels[0, -1, 0]) - float(pixels[0, -1, -1])) < 1e-5


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_outputs_load_and_run(converted, tiny_checkpoint, dtype: str):
    import torch
    from transformers import AutoModelForZeroShotObjectDetection

    out = converted(tiny_checkpoint("v2-tiny"), dtype=dtype)
    assert json.loads((out / RECORD_FILE).read_text())["dtype"] == dtype
    with safe_open(out / "model.safetensors", "pt") as weights:
        assert weights.get_tensor("class_head.dense0.weight").dtype == getattr(torch, dtype)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(out)
    ids = torch.tensor([[49406, 1929, 49407] + [0] * 13])
    with torch.inference_mode():
        result = model(input_ids=ids, pixel_values=torch.zeros(1, 3, 64, 64, dtype=model.dtype))
    assert torch.isfinite(result.logits.float()).all()


def test_sharding(tmp_path: Path, tiny_checkpoint):
    out = tmp_path / "sharded"
    result = convert_checkpoint(tiny_checkpoint(), out, max_shard_size="2MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((out / s).exists() for s in shards)
    assert "model.safetensors" not in result.files
    model = load_hf_model(out)
    assert model.owlvit.text_model.embeddings.token_embedding.weight.shape[0] == 49408


def test_pipeline_runs(converted, tiny_checkpoint):
    from PIL import Image
    from transformers import pipeline

    detector = pipeline("zero-shot-object-detection", model=str(converted(tiny_checkpoint())))
    found = detector(Image.new("RGB", (80, 60), (0, 128, 255)), candidate_labels=["cat", "dog"])
    assert isinstance(found, list)


def test_refuses_non_empty_output_and_overwrites_when_asked(tmp_path: Path, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not empty"):
        convert_checkpoint(tiny_checkpoint(), out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(BadInputError, match="owlvit did not write it"):
        convert_checkpoint(tiny_checkpoint(), out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    convert_checkpoint(tiny_checkpoint(), out, force_overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    convert_checkpoint(tiny_checkpoint(), out, overwrite=True)  # an owlvit output: replaced
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_nothing_behind(tmp_path: Path):
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.testing.fixtures import checkpoint_tree, random_params, write_checkpoint

    params = random_params(VARIANTS["v1-tiny"])
    params["class_head/Dense_0/bias"] = params["class_head/Dense_0/bias"][:-1]
    bad = write_checkpoint(tmp_path / "bad", checkpoint_tree(params, "current"))
    with pytest.raises(MappingError, match="class_head/Dense_0/bias has shape"):
        convert_checkpoint(bad, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


@pytest.mark.parametrize(("size", "message"), [("lots", "cannot read size"), ("0GB", "positive")])
def test_bad_shard_size(tmp_path: Path, tiny_checkpoint, size: str, message: str):
    with pytest.raises(BadInputError, match=message):
        convert_checkpoint(tiny_checkpoint(), tmp_path / "o", max_shard_size=size)


def test_bad_dtype(tmp_path: Path, tiny_checkpoint):
    with pytest.raises(BadInputError, match="dtype must be one of") as caught:
        convert_checkpoint(tiny_checkpoint(), tmp_path / "o", dtype="int8")
    assert "--" not in str(caught.value)  # the library names no CLI flag


HEAVY = {"transformers", "torch", "jax", "flax", "tokenizers"}


def imported_top_level(stderr: str) -> set[str]:
    """Top-level modules named in `-X importtime` lines ("import time: self | total | name")."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    return names


def test_console_script_convert_imports_no_transformers_torch_or_jax(
    tmp_path: Path, tiny_checkpoint
):
    """The whole directory is written without transformers, torch or jax (`make demo`'s
    convert runs the same command); what it writes loads as the model it names."""
    out = tmp_path / "out"
    result = run_console_script(
        "convert", tiny_checkpoint("v2-tiny"), out, env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = imported_top_level(result.stderr)
    assert {"owlvit_cli", "numpy"} <= imported  # the trace is there and complete
    assert imported & HEAVY == {"tokenizers"}, sorted(imported & HEAVY)
    model = load_hf_model(out)
    assert type(model).__name__ == "Owlv2ForObjectDetection"


def stored_in(path: Path, default: str, overrides: dict[str, str] | None = None) -> Path:
    """A v2-tiny checkpoint whose tensors are stored in `default`, some in other dtypes."""
    from owlvit_cli.convert.safetensors_writer import numpy_dtype
    from owlvit_cli.model.spec import VARIANTS
    from owlvit_cli.model.tree import nest
    from owlvit_cli.testing.fixtures import random_params, write_checkpoint

    params = random_params(VARIANTS["v2-tiny"])
    cast = {
        name: values.astype(numpy_dtype((overrides or {}).get(name, default)))
        for name, values in params.items()
    }
    return write_checkpoint(path, {"params": nest(cast)})


def safetensors_dtypes(out: Path) -> set[str]:
    header_size = int.from_bytes((out / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((out / "model.safetensors").read_bytes()[8 : 8 + header_size])
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def test_auto_dtype_keeps_bfloat16_beside_a_float32_scalar(tmp_path: Path):
    """Mixed-precision training leaves `logit_scale` in float32 beside bfloat16 weights: the
    default keeps bfloat16 (half the size of float32) and says why, in both outputs."""
    ckpt = stored_in(tmp_path / "bf16", "bfloat16", {"backbone/clip/logit_scale": "float32"})
    result = run_console_script("convert", ckpt, tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["dtype"] == "bfloat16"
    assert payload["dtype_reason"].startswith("the checkpoint's weights are bfloat16")
    assert "params/backbone/clip/logit_scale" in payload["dtype_reason"]
    assert safetensors_dtypes(tmp_path / "out") == {"BF16"}
    record = json.loads((tmp_path / "out" / RECORD_FILE).read_text())
    assert record["dtype"] == "bfloat16" and record["dtype_reason"] == payload["dtype_reason"]
    human = run_console_script("convert", ckpt, tmp_path / "human")
    assert human.returncode == 0, human.stderr
    assert "dtype          bfloat16 (the checkpoint's weights are bfloat16" in human.stdout


def test_auto_dtype_widens_weights_that_mix_dtypes(tmp_path: Path):
    kernel = "backbone/clip/visual/transformer/resblocks_0/mlp/c_fc/kernel"
    ckpt = stored_in(tmp_path / "mixed", "bfloat16", {kernel: "float16"})
    result = run_console_script("convert", ckpt, tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["dtype"] == "float32"
    assert (
        payload["dtype_reason"]
        == "the weights mix bfloat16 and float16; float32 holds each exactly"
    )
    assert safetensors_dtypes(tmp_path / "out") == {"F32"}
    asked = run_console_script("convert", ckpt, tmp_path / "asked", "--dtype", "fp16", "--json")
    assert json.loads(asked.stdout)["dtype"] == "float16"
    assert json.loads(asked.stdout)["dtype_reason"] == "as requested"


def test_convert_verify_of_a_bfloat16_checkpoint_passes(tiny_checkpoint, tmp_path: Path):
    """The bfloat16 directory auto writes is verified with bfloat16's tolerances."""
    out = tmp_path / "out"
    result = run_console_script(
        "convert", tiny_checkpoint("v2-tiny", "v2", "bfloat16"), out, "--verify", "--json"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert payload["dtype"] == "bfloat16" and payload["verification"]["passed"]
    assert payload["verification"]["dtype"] == "bfloat16"


def test_dry_run_plans_exactly_what_convert_writes_and_writes_nothing(
    tiny_checkpoint, tmp_path: Path
):
    ckpt = tiny_checkpoint("v2-tiny", "v2", "bfloat16")
    work = tmp_path / "work"
    work.mkdir()
    args = ("convert", ckpt, work / "nested" / "out", "--max-shard-size", "1MB")
    planned = run_console_script(*args, "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    assert list(work.iterdir()) == []  # no OUT, no parent, no temporary directory
    plan = json.loads(planned.stdout)
    assert plan["dry_run"] is True and plan["dtype"] == "bfloat16"
    assert plan["num_tensors"] == 98 and plan["generated"] and plan["ignored"] == []
    human = run_console_script(*args, "--dry-run")
    assert human.returncode == 0 and list(work.iterdir()) == []
    assert "dry run: nothing written" in human.stdout
    assert f"in {len(plan['shards'])} files" in human.stdout and "bfloat16" in human.stdout

    done = run_console_script(*args, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert plan["files"] == result["files"] and len(plan["shards"]) > 1
    for key in ("dtype", "dtype_reason", "num_tensors", "num_parameters", "ignored", "generated"):
        assert plan[key] == result[key], key
    for shard in plan["shards"]:
        data = (work / "nested" / "out" / shard["file"]).read_bytes()
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        assert len(header) - 1 == shard["tensors"]
        assert (
            sum(e - s for s, e in (v["data_offsets"] for v in header.values() if "dtype" in v))
            == shard["bytes"]
        )


def test_dry_run_is_refused_as_convert_would_be(tiny_checkpoint, tmp_path: Path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("user's file")
    refused = run_console_script("convert", tiny_checkpoint(), taken, "--dry-run", "--json")
    assert refused.returncode == 2 and "not empty" in json.loads(refused.stdout)["error"]["message"]
    both = run_console_script("convert", tiny_checkpoint(), tmp_path / "o", "--dry-run", "--verify")
    assert both.returncode == 2 and "nothing to --verify" in both.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def _overwrite_refused(ckpt: Path, out: Path) -> str:
    result = run_console_script("convert", ckpt, out, "--overwrite", "--json")
    assert result.returncode == 2, result.stderr
    assert json.loads(result.stdout)["error"]["code"] == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "--force-overwrite" in line
    return line


def test_overwrite_replaces_only_what_owlvit_wrote(tiny_checkpoint, tmp_path: Path):
    """Files a user added to an earlier output, or edited in it, are named and kept; the
    report verify recorded there is owlvit's and goes."""
    ckpt, out = tiny_checkpoint(), tmp_path / "out"
    for args in (("convert",), ("verify", "--record"), ("convert", "--overwrite")):
        result = run_console_script(args[0], ckpt, out, *args[1:], "-q")
        assert result.returncode == 0, result.stderr
    assert not (out / "owlvit_verification.json").exists()  # the old report went with it
    assert run_console_script("verify", ckpt, out, "--record", "-q").returncode == 0

    (out / "EVAL.md").write_text("my evaluation")
    (out / "README.md").write_text("my card")
    line = _overwrite_refused(ckpt, out)
    assert "files owlvit did not write: EVAL.md, README.md" in line
    (out / "EVAL.md").unlink()
    (out / "README.md").unlink()
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "id2label": {"0": "cat"}}))
    assert "config.json (changed since owlvit wrote it)" in _overwrite_refused(ckpt, out)
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "cat"}


def test_a_record_copied_into_another_directory_proves_nothing(
    tiny_checkpoint, converted, tmp_path: Path
):
    record = converted(tiny_checkpoint()) / RECORD_FILE
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("mine")
    (thesis / RECORD_FILE).write_bytes(record.read_bytes())
    assert "did not write: chapter1.tex" in _overwrite_refused(tiny_checkpoint(), thesis)
    (thesis / RECORD_FILE).write_text(json.dumps({"tool": "owlvit"}))  # a bare claim
    assert "lists no files" in _overwrite_refused(tiny_checkpoint(), thesis)
    (thesis / "owlvit_verification.json").write_text("{}")  # not a report on this record
    (thesis / RECORD_FILE).write_bytes(record.read_bytes())
    assert "owlvit_verification.json" in _overwrite_refused(tiny_checkpoint(), thesis)
    assert (thesis / "chapter1.tex").read_text() == "mine"


def test_symlinks_in_and_as_the_output_never_reach_the_users_files(tiny_checkpoint, tmp_path: Path):
    """OUT a symlink to a user's directory, or an earlier output holding a symlink to a user's
    file: --overwrite refuses (owlvit writes no symlinks), --force-overwrite deletes the link
    and never what it points to."""
    ckpt = tiny_checkpoint()
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(thesis)
    assert "no conversion record" in _overwrite_refused(ckpt, link)
    assert [p.name for p in thesis.iterdir()] == ["chapter1.tex"]

    out = tmp_path / "out"
    assert run_console_script("convert", ckpt, out, "-q").returncode == 0
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    (out / "notes.md").symlink_to(precious)
    assert "did not write: notes.md" in _overwrite_refused(ckpt, out)
    (out / "model.safetensors").unlink()
    (out / "model.safetensors").symlink_to(precious)
    assert "model.safetensors (changed" in _overwrite_refused(ckpt, out)
    forced = run_console_script("convert", ckpt, out, "--force-overwrite", "-q")
    assert forced.returncode == 0, forced.stderr
    assert precious.read_text() == "mine" and not (out / "notes.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "out", "precious.txt", "thesis"]


def test_conversion_pauses_the_collector_and_restores_it(tmp_path: Path, tiny_checkpoint):
    """API callers get the CLI's setting: no cyclic collection while converting (the
    tokenizer's many small objects would trigger it for nothing), the caller's setting after.
    The conversion's own progress calls say whether the collector was on at each step."""
    import contextlib
    import gc

    seen: list[bool] = []

    class Probe:
        @contextlib.contextmanager
        def step(self, name: str, total: float | None = None, unit: str = ""):
            seen.append(gc.isenabled())

            class Handle:
                def set_total(self, total: float, unit: str = "") -> None:
                    seen.append(gc.isenabled())

                def advance(self, amount: float = 1) -> None:
                    seen.append(gc.isenabled())

                def describe(self, name: str) -> None:
                    pass

            yield Handle()

    assert gc.isenabled()
    convert_checkpoint(tiny_checkpoint(), tmp_path / "out", progress=Probe())
    assert seen and not any(seen)
    assert gc.isenabled()
    gc.disable()
    try:
        convert_checkpoint(tiny_checkpoint(), tmp_path / "again")
        assert not gc.isenabled()  # a caller's choice is left as it was
    finally:
        gc.enable()
