"""verify: trustworthy in both directions, with the documented exit codes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from owlvit_cli.model.model_dir import VERIFICATION_FILE
from owlvit_cli.verify.inputs import VerifyOptions
from owlvit_cli.verify.run import run_verification
from tests.helpers import (
    TINY_CASES,
    assert_one_line_error,
    edited_model_dir,
    held_console_script,
    problem_lines,
    reference_checkpoint,
    reference_io,
    run_console_script,
)


@pytest.mark.parametrize(("variant", "layout"), TINY_CASES)
def test_passes_on_every_tiny_variant_and_layout(tiny_checkpoint, converted, variant, layout):
    ckpt = tiny_checkpoint(variant, layout)
    # The absolute 1e-5 below is for the notebook's smooth pixels; on the evaluator's
    # (not anti-aliased) ones float32 noise reaches 1.1e-5 on logits of magnitude ~5, inside
    # the magnitude-scaled mapping tolerance verify applies (checked by `passed`).
    options = VerifyOptions(preprocessing="notebook")
    result = run_verification(ckpt, converted(ckpt), options)
    report = result.report
    assert report["passed"], report["failed"]
    names = {(r["level"], r["name"]) for r in report["outputs"]}
    expected = {"pred_logits", "pred_boxes", "class_embeddings", "query_embeddings",
                "feature_map", "image_class_embeddings", "top_k", "image_query_box",
                "image_query_embedding", "image_query_logits", "image_query_top_k"}  # fmt: skip
    if variant.startswith("v2"):
        expected.add("objectness_logits")
    assert {n for level, n in names if level == "mapping"} == expected | {"finite_weights"}
    assert {n for level, n in names if level == "stock"} == expected
    mapping = [r for r in report["outputs"] if r["level"] == "mapping"]
    # the mapping level: ≤ 1e-5 with scenic semantics patched in
    assert all(r["max_abs"] <= 1e-5 for r in mapping), mapping


def test_one_perturbed_tensor_fails_with_exit_1(cli, tiny_checkpoint, converted, tmp_path):
    ckpt = tiny_checkpoint("v2-tiny", "v2")

    def nudge(tensors: dict) -> None:
        tensors["owlv2.vision_model.encoder.layers.1.mlp.fc2.bias"][3] += 1e-2

    bad = edited_model_dir(converted(ckpt), tmp_path / "bad", nudge)
    result = cli("verify", ckpt, bad)
    assert result.exit_code == 1
    assert "verification failed" in result.stderr and "mapping/pred_logits" in result.stderr
    assert "✗ 1. mapping: " in result.stdout and "    ✗ pred_logits: max |diff| " in result.stdout
    assert "FAIL" not in result.stdout  # the tables only with --verbose
    verbose = cli("verify", ckpt, bad, "--verbose")
    assert verbose.exit_code == 1 and "FAIL" in verbose.stdout


def test_console_script_exit_codes_and_complete_output(tiny_checkpoint, converted, tmp_path):
    """The real entry point ends the process without interpreter teardown once jax and torch
    are loaded: the JSON must still arrive whole and the exit code be the documented one."""
    ckpt = tiny_checkpoint("v2-tiny", "v2")
    good = run_console_script("verify", ckpt, converted(ckpt), "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["passed"] is True

    def nudge(tensors: dict) -> None:
        tensors["owlv2.vision_model.encoder.layers.1.mlp.fc2.bias"][3] += 1e-2

    bad = edited_model_dir(converted(ckpt), tmp_path / "bad", nudge)
    failed = run_console_script("verify", ckpt, bad, "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["passed"] is False
    assert "verification failed" in failed.stderr
    other = converted(tiny_checkpoint("v1-tiny"))
    wrong = run_console_script("verify", ckpt, other)
    assert wrong.returncode == 1 and "was converted from" in wrong.stderr  # the pairing first
    wrong = run_console_script("verify", ckpt, other, "--ignore-source")
    assert wrong.returncode == 2 and "not the same architecture" in wrong.stderr


def test_swapped_attention_heads_fail(tiny_checkpoint, converted, tmp_path):
    ckpt = tiny_checkpoint("v1-tiny", "current")

    def swap_heads(tensors: dict) -> None:
        name = "owlvit.text_model.encoder.layers.0.self_attn.q_proj.weight"
        weight = tensors[name]
        half = weight.shape[0] // 2  # two heads
        tensors[name] = torch.cat([weight[half:], weight[:half]])

    bad = edited_model_dir(converted(ckpt), tmp_path / "swapped", swap_heads)
    report = run_verification(ckpt, bad, VerifyOptions()).report
    assert not report["passed"]
    assert "mapping/query_embeddings" in report["failed"]
    assert "mapping/pred_boxes" not in report["failed"]  # the vision side is untouched


def test_model_from_another_checkpoint_fails(cli, tiny_checkpoint, converted):
    """Same size, other sha256: the pairing fails first, named as such; --ignore-source
    compares anyway, and the numbers fail too."""
    other = converted(tiny_checkpoint("v1-tiny", "v1", seed=7))
    ckpt = tiny_checkpoint("v1-tiny", "v1")
    result = cli("verify", ckpt, other, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == ["source"] and report["outputs"] == []
    assert report["source"]["matches"] is False
    assert f"was converted from {tiny_checkpoint('v1-tiny', 'v1', seed=7).name}" in result.stderr
    assert f"not this file {ckpt.name} (sha256 " in result.stderr
    forced = cli("verify", ckpt, other, "--json", "--ignore-source")
    assert forced.exit_code == 1
    report = json.loads(forced.stdout)
    assert not report["passed"] and "mapping/pred_logits" in report["failed"]
    assert report["source"]["matches"] is False  # still reported


def test_different_architecture_is_bad_input(cli, tiny_checkpoint, converted):
    other = converted(tiny_checkpoint("v2-tiny"))
    result = cli("verify", tiny_checkpoint("v1-tiny"), other, "--ignore-source")
    assert result.exit_code == 2
    assert "not the same architecture" in result.stderr and "model_type" in result.stderr


def test_json_report_schema_and_record(cli, tiny_checkpoint, converted, tmp_path):
    src = converted(tiny_checkpoint("v2-tiny", "current"))
    hf_dir = tmp_path / "model"
    shutil.copytree(src, hf_dir)
    result = cli("verify", tiny_checkpoint("v2-tiny", "current"), hf_dir, "--json", "--record")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["version"] == 2
    assert set(report["levels"]) == {"mapping", "stock", "processor"}
    for row in report["outputs"]:
        assert {"name", "level", "max_abs", "tolerance", "passed"} <= set(row)
    assert {"flax_forward", "hf_forward", "flax_compile", "load_hf"} <= set(report["timings"])
    recorded = json.loads((hf_dir / "owlvit_verification.json").read_text())
    assert recorded["passed"] and recorded["outputs"] == report["outputs"]
    conversion = json.loads((hf_dir / "owlvit_conversion.json").read_text())
    assert recorded["checkpoint_sha256"] == conversion["source"]["sha256"]
    assert str(tmp_path) not in (hf_dir / "owlvit_verification.json").read_text()


def test_save_outputs_and_npy_image_reproduce_scenic(cli, tmp_path, converted):
    """A .npy image is used as is: with scenic's own pixels, the Flax side gives scenic's
    reference outputs, and the saved arrays hold both sides."""
    io = reference_io("v1_release")
    pixels = tmp_path / "pixels.npy"
    np.save(pixels, io["images_nhwc"][0])
    ckpt = reference_checkpoint("v1_release")
    saved = tmp_path / "outputs.npz"
    result = cli("verify", ckpt, converted(ckpt), "--image", pixels, "--query",
                 "a photo of a dog", "--query", "bicycle", "--save-outputs", saved)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    with np.load(saved) as arrays:
        keys = set(arrays.files)
        assert {"pixel_values", "input_ids", "flax_pred_logits", "flax_pred_boxes",
                "hf_pred_logits", "hf_pred_boxes", "flax_class_embeddings",
                "hf_class_embeddings"} <= keys  # fmt: skip
        assert "flax_objectness_logits" not in keys
        np.testing.assert_array_equal(arrays["input_ids"][0], io["input_ids"][0])
        np.testing.assert_allclose(arrays["pixel_values"][0], io["pixel_values_nchw"][0], atol=1e-6)
        logits = arrays["flax_pred_logits"][0][:, :2]
        np.testing.assert_allclose(logits, io["pred_logits"][0][:, :2], atol=1e-5)
        np.testing.assert_allclose(arrays["flax_pred_boxes"][0], io["pred_boxes"][0], atol=1e-5)
    assert "processor" not in result.stdout  # no raw image, so no processor level


@pytest.mark.parametrize("pipeline", ["notebook", "evaluator"])
def test_strict_processor_fails_against_the_chosen_pipeline(
    cli, tiny_checkpoint, converted, pipeline
):
    """The processor pads with 0.0 and anti-aliases: off from both of scenic's pipelines on the
    (non-square, downsampled) sample; strict mode holds it to the one verify ran with."""
    ckpt = tiny_checkpoint("v2-tiny")
    args = ("verify", ckpt, converted(ckpt), "--preprocessing", pipeline)
    assert cli(*args).exit_code == 0
    result = cli(*args, "--strict-processor", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["preprocessing"] == pipeline
    other = "evaluator" if pipeline == "notebook" else "notebook"
    assert f"processor/pixels_{pipeline}" in report["failed"]
    assert processor_rows(report)[f"pixels_{other}"]["tolerance"] is None  # information only
    assert f"processor/pixels_{other}" not in report["failed"]


def processor_rows(report: dict) -> dict[str, dict]:
    return {r["name"]: r for r in report["outputs"] if r["level"] == "processor"}


def test_processor_level_reports_both_pipelines(cli, tiny_checkpoint, converted):
    """By default the processor level compares inputs only, against both of scenic's
    pipelines, labelled; the forward passes on the processor's own inputs (top-k) run with
    --processor-detections or --strict-processor."""
    ckpt = tiny_checkpoint("v1-tiny")
    plain = json.loads(cli("verify", ckpt, converted(ckpt), "--json").stdout)
    rows = processor_rows(plain)
    assert set(rows) == {"pixels_notebook", "pixels_evaluator", "input_ids"}
    assert "pad 0.5" in rows["pixels_notebook"]["note"]
    assert "pad 0.0" in rows["pixels_evaluator"]["note"]
    # The sample is 640×448: the processor's 0.0 padding is 0.5 off the notebook's gray.
    assert rows["pixels_notebook"]["max_abs"] >= 0.49
    assert plain["preprocessing"] == "evaluator" and plain["processor_detections"] is False
    assert plain["top_detections"]["hf_processor"] is None
    result = cli("verify", ckpt, converted(ckpt), "--processor-detections", "--json")
    assert result.exit_code == 0, result.stderr
    full = json.loads(result.stdout)
    for pipeline in ("notebook", "evaluator"):
        top_k = processor_rows(full)[f"top_k_{pipeline}"]
        assert top_k["tolerance"] is None and top_k["passed"]  # informational
        assert pipeline in top_k["note"]
        assert len(full["processor"]["scenic_top_detections"][pipeline][0]["patches"]) == 5
    tops = full["processor"]["scenic_top_detections"]
    assert tops["evaluator"] == full["top_detections"]["flax"]  # the run's own pipeline
    assert tops["notebook"] != tops["evaluator"]
    assert len(full["top_detections"]["hf_processor"][0]["patches"]) == 5
    assert full["processor_detections"] is True


def test_extreme_aspect_ratio_image(cli, tiny_checkpoint, converted, tmp_path):
    """A 10000×10 picture verifies without scenic's side ever building the 10000² square."""
    image = tmp_path / "sliver.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (10000, 10, 3), dtype=np.uint8)).save(image)
    ckpt = tiny_checkpoint("v2-tiny")
    for pipeline in ("notebook", "evaluator"):
        args = ("--image", image, "--preprocessing", pipeline, "--json")
        result = cli("verify", ckpt, converted(ckpt), *args)
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["images"] == ["sliver.png"] and report["preprocessing"] == pipeline
        # transformers' processor would build the square: left out of level 3, and said so.
        assert "10000×10000 square" in report["processor"]["skipped_images"]["sliver.png"]


def test_a_photo_far_larger_than_the_input_skips_the_processor_level(
    cli, tiny_checkpoint, converted, tmp_path
):
    """The saved Owlv2 processor's blur would cost some 520 G multiply-adds on a 3000×2000
    photo at the tiny model's 64 px: left out of level 3 and said so, the rest verified."""
    image = tmp_path / "photo.png"
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (2000, 3000, 3), dtype=np.uint8)).save(image)
    ckpt = tiny_checkpoint("v2-tiny")
    result = cli("verify", ckpt, converted(ckpt), "--image", image, "--json")
    assert result.exit_code == 0, result.stderr
    skipped = json.loads(result.stdout)["processor"]["skipped_images"]
    assert "blurs a 3000×3000 square" in skipped["photo.png"]


def test_atol_override_can_fail_a_stock_check(cli, tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("v2-tiny")
    result = cli("verify", ckpt, converted(ckpt), "--atol", "objectness_logits=0", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["failed"] == ["stock/objectness_logits"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--atol", "pred_logits"], "NAME=VALUE"),
        (["--atol", "nonsense=1"], "unknown outputs"),
        (["--query", "  "], "empty --query"),
        (["--save-outputs", "out.txt"], ".npz"),
        (["--preprocessing", "skimage"], "notebook, evaluator"),
    ],
)
def test_bad_options_exit_2(cli, tiny_checkpoint, converted, args, message):
    ckpt = tiny_checkpoint()
    result = cli("verify", ckpt, converted(ckpt), *args)
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_images_exit_2(cli, tiny_checkpoint, converted, tmp_path):
    ckpt = tiny_checkpoint()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((10, 10, 3), np.float32))
    for image in (text, wrong, tmp_path / "missing.jpg"):
        result = cli("verify", ckpt, converted(ckpt), "--image", image)
        assert result.exit_code == 2, (image, result.stderr)
        assert len(problem_lines(result.stderr)) == 1


def test_broken_model_directories_exit_2(cli, tiny_checkpoint, converted, tmp_path):
    ckpt = tiny_checkpoint()
    src = converted(ckpt)
    cases = {}
    for name, broken in (("no_config", "config.json"), ("no_weights", "model.safetensors")):
        cases[name] = tmp_path / name
        shutil.copytree(src, cases[name])
        (cases[name] / broken).unlink()
    cases["corrupt"] = tmp_path / "corrupt"
    shutil.copytree(src, cases["corrupt"])
    weights = cases["corrupt"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    cases["missing"] = tmp_path / "nowhere"
    for name, hf_dir in cases.items():
        result = cli("verify", ckpt, hf_dir)
        assert result.exit_code == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_convert_with_verify(cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "model"
    result = cli("convert", tiny_checkpoint("v1-tiny", "v2"), out, "--verify", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["verification"]["passed"] is True
    assert (out / "owlvit_verification.json").exists()


def test_save_viz_draws_both_sides(cli, tiny_checkpoint, converted, tmp_path):
    from PIL import Image

    from owlvit_cli.verify.inputs import sample_image_path

    ckpt = tiny_checkpoint("v2-tiny")
    picture = tmp_path / "side_by_side.png"
    result = cli("verify", ckpt, converted(ckpt), "--save-viz", picture)
    assert result.exit_code == 0, result.stderr
    sample = Image.open(sample_image_path())
    with Image.open(picture) as drawn:
        assert drawn.width > 2 * sample.width and drawn.height > sample.height
    assert cli("verify", ckpt, converted(ckpt), "--save-viz", tmp_path / "x.nope").exit_code == 2


@pytest.mark.parametrize(
    ("point", "flags"), [("verify-paired", []), ("verify-compared", ["--record", "--json"])]
)
def test_hf_dir_replaced_while_verify_runs_is_refused(
    tiny_checkpoint, converted, tmp_path, point, flags
):
    """`convert --overwrite` into HF_DIR while verify reads it: before the models load (it
    would compare the new weights against the old checkpoint, a false "mapping" failure) or
    after they ran (it would record `passed` for weights it never compared). Either way: exit
    2, one line, and nothing recorded in the new directory."""
    ckpt, other = tiny_checkpoint(), tiny_checkpoint(seed=1)
    hf_dir = tmp_path / "model"
    shutil.copytree(converted(ckpt), hf_dir)
    hold = tmp_path / "hold"
    proc = held_console_script(["verify", ckpt, hf_dir, *flags], point, hold)
    replaced = run_console_script("convert", other, hf_dir, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    hold.unlink()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert len(problem_lines(err)) == 1 and "was replaced while" in err
    assert not (hf_dir / VERIFICATION_FILE).exists()
    if "--json" in flags:
        assert json.loads(out)["error"]["code"] == 2


def test_record_never_writes_through_or_removes_a_symlink_in_hf_dir(
    tiny_checkpoint, converted, tmp_path
):
    """A link where the report goes is the user's, not a report verify wrote: refused up front
    (one line, exit 2), the link and what it points to left as they are. (A link planted after
    that check is replaced through the pinned directory, never written through.)"""
    ckpt = tiny_checkpoint()
    hf_dir = tmp_path / "model"
    shutil.copytree(converted(ckpt), hf_dir)
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    (hf_dir / VERIFICATION_FILE).symlink_to(precious)
    result = run_console_script("verify", ckpt, hf_dir, "--record", "-q")
    assert "is a symlink or not a regular file" in assert_one_line_error(result, 2)
    assert precious.read_text() == "mine"
    assert (hf_dir / VERIFICATION_FILE).is_symlink()


def test_verify_opens_the_checkpoint_and_checks_the_directory_once(
    tiny_checkpoint, converted, monkeypatch
):
    """Pairing, loading the Flax model and the finite-weights row share one open checkpoint
    and one plan; HF_DIR is checked once for the pairing, the architecture and both loads."""
    import owlvit_cli.checkpoint.reader as reader
    import owlvit_cli.convert.mapping as mapping
    import owlvit_cli.model.model_dir as model_dir
    import owlvit_cli.runtime.hf_model as hf_model
    import owlvit_cli.verify.run as verify_run

    ckpt = tiny_checkpoint("v2-tiny")
    hf_dir = converted(ckpt, "bfloat16")  # verify loads it twice: in float32 and as stored
    calls: dict[str, int] = {}

    def count(name: str, *modules: object) -> None:
        """Count calls of `name` however it is reached: each module's binding of it."""
        real = getattr(modules[0], name)

        def spy(*args: object, **kwargs: object) -> object:
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)

        for module in modules:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, spy)

    count("open_checkpoint", reader, verify_run)
    count("plan_mapping", mapping)
    count("check_model_dir", model_dir, hf_model)
    assert run_verification(ckpt, hf_dir, VerifyOptions()).report["passed"]
    assert calls == {"open_checkpoint": 1, "plan_mapping": 1, "check_model_dir": 1}
