"""verify on float16 and bfloat16 directories: a correct conversion passes every level, the
mapping level still catches one changed tensor, and the report names dtype and tolerances."""

from __future__ import annotations

import json

import pytest
import torch

from owlvit_cli.verify.compare import STOCK_TOLERANCES_BY_DTYPE
from owlvit_cli.verify.inputs import VerifyOptions
from owlvit_cli.verify.run import run_verification
from tests.helpers import edited_model_dir, reference_checkpoint, run_console_script

DTYPES = ("float32", "float16", "bfloat16")
HALF = ("float16", "bfloat16")


def levels_of(report: dict, level: str) -> list[dict]:
    return [r for r in report["outputs"] if r["level"] == level]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("variant", ["v1-tiny", "v2-tiny"])
def test_half_precision_directories_pass_every_level(tiny_checkpoint, converted, variant, dtype):
    ckpt = tiny_checkpoint(variant, "v2")
    report = run_verification(ckpt, converted(ckpt, dtype), VerifyOptions()).report
    assert report["passed"], report["failed"]
    assert report["dtype"] == dtype and report["dtype_source"] == "owlvit_conversion.json"
    assert set(report["levels"]) == {"mapping", "stock", "precision", "processor"}
    # The mapping level keeps its float32 meaning: rounded params, float32 compute.
    assert all(r["max_abs"] <= 1e-5 for r in levels_of(report, "mapping"))
    stock = report["levels"]["stock"]
    assert stock["tolerances"] == STOCK_TOLERANCES_BY_DTYPE[dtype]
    assert set(stock["tolerance_sources"].values()) == {f"measured default for {dtype}"}
    assert dtype in stock["compared"]  # the stock model ran in its stored dtype
    precision = levels_of(report, "precision")
    assert precision and all(r["tolerance"] is None and r["passed"] for r in precision)
    # Storing in half precision does change outputs: the precision line is not all zeros.
    assert max(r["max_abs"] for r in precision) > 1e-5


@pytest.mark.parametrize("name", ["v1_release", "v2_release", "v1_current"])
@pytest.mark.parametrize("dtype", HALF)
def test_scenic_reference_checkpoints_pass_in_half_precision(converted, name, dtype):
    ckpt = reference_checkpoint(name)
    report = run_verification(ckpt, converted(ckpt, dtype), VerifyOptions()).report
    assert report["passed"], report["failed"]


PERTURBED = {
    "text tower": "owlv2.text_model.encoder.layers.0.mlp.fc1.bias",
    "vision tower": "owlv2.vision_model.encoder.layers.1.mlp.fc2.bias",
    "class head": "class_head.dense0.bias",
    "box head": "box_head.dense0.bias",
    "objectness head": "objectness_head.dense0.bias",
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", PERTURBED)
def test_one_perturbed_tensor_fails_the_mapping_level(
    tiny_checkpoint, converted, tmp_path, dtype, where
):
    ckpt = tiny_checkpoint("v2-tiny", "v2")

    def nudge(tensors: dict[str, torch.Tensor]) -> None:
        tensor = tensors[PERTURBED[where]]
        assert tensor.dtype == getattr(torch, dtype)
        tensor[3] += 1e-2

    bad = edited_model_dir(converted(ckpt, dtype), tmp_path / "bad", nudge)
    report = run_verification(ckpt, bad, VerifyOptions()).report
    assert report["levels"]["mapping"]["passed"] is False, where
    assert any(name.startswith("mapping/") for name in report["failed"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_swapped_heads_fail(tiny_checkpoint, converted, tmp_path, dtype):
    """The box and objectness heads' first layers have the same shape: swapped, every shape
    check passes and only the numbers can tell."""
    ckpt = tiny_checkpoint("v2-tiny", "v2")

    def swap(tensors: dict[str, torch.Tensor]) -> None:
        for part in ("weight", "bias"):
            box, obj = f"box_head.dense0.{part}", f"objectness_head.dense0.{part}"
            tensors[box], tensors[obj] = tensors[obj], tensors[box]

    bad = edited_model_dir(converted(ckpt, dtype), tmp_path / "swapped", swap)
    report = run_verification(ckpt, bad, VerifyOptions()).report
    assert not report["passed"]
    assert {"mapping/pred_boxes", "mapping/objectness_logits"} <= set(report["failed"])


def test_atol_is_named_as_the_source_of_a_tolerance(cli, tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("v1-tiny", "v2")
    result = cli("verify", ckpt, converted(ckpt, "bfloat16"), "--atol", "pred_boxes=0.5", "-v")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "weights stored as bfloat16 (from owlvit_conversion.json)" in text
    assert "tolerances: --atol; measured default for bfloat16" in text
    report = json.loads(
        cli(
            "verify", ckpt, converted(ckpt, "bfloat16"), "--atol", "pred_boxes=0.5", "--json"
        ).stdout
    )
    stock = report["levels"]["stock"]
    assert stock["tolerances"]["pred_boxes"] == 0.5
    assert stock["tolerance_sources"]["pred_boxes"] == "--atol"
    assert stock["tolerance_sources"]["pred_logits"] == "measured default for bfloat16"


def test_dtype_from_the_weights_when_there_is_no_record(cli, tiny_checkpoint, converted, tmp_path):
    ckpt = tiny_checkpoint("v1-tiny", "v2")
    bare = edited_model_dir(converted(ckpt, "float16"), tmp_path / "bare", lambda _: None)
    (bare / "owlvit_conversion.json").unlink()
    result = cli("verify", ckpt, bare, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dtype"] == "float16" and report["dtype_source"] == "model.safetensors header"
    assert report["source"]["matches"] is None
    assert "has no owlvit_conversion.json" in report["source"]["message"]


def test_convert_verify_bfloat16_records_dtype_and_tolerances(tiny_checkpoint, tmp_path):
    out = tmp_path / "model"
    ckpt = tiny_checkpoint("v2-tiny", "v2")
    result = run_console_script("convert", ckpt, out, "--dtype", "bfloat16", "--verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1].startswith("✓ converted")
    # Flax on the float32 params, then on them rounded; transformers in float32 (towers once),
    # then as stored (its vision tower twice): each tiny tower has two layers
    detail = "(cpu, 1 image of 64×64, 16 patches, 4 queries)"
    assert f"running the Flax model {detail}: done, 8 layers in " in result.stderr
    assert f"running the transformers model {detail}: done, 10 layers in " in result.stderr
    recorded = json.loads((out / "owlvit_verification.json").read_text())
    assert recorded["passed"] and recorded["dtype"] == "bfloat16"
    assert recorded["levels"]["stock"]["tolerances"] == STOCK_TOLERANCES_BY_DTYPE["bfloat16"]
    assert recorded["source"]["matches"] is True


def test_failed_convert_verify_does_not_end_on_converted(
    cli, tiny_checkpoint, tmp_path, monkeypatch
):
    """A tolerance no real model meets makes a correct conversion fail its verification."""
    strict = {**STOCK_TOLERANCES_BY_DTYPE["float32"], "pred_logits": 0.0}
    monkeypatch.setitem(STOCK_TOLERANCES_BY_DTYPE, "float32", strict)
    out = tmp_path / "model"
    result = cli("convert", tiny_checkpoint("v1-tiny", "v2"), out, "--verify")
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())
    assert text.endswith("but verification failed (stock/pred_logits); see above")
    assert "✗ wrote" in text
    assert "✓ converted" not in result.stdout
    assert (out / "owlvit_conversion.json").is_file()  # the directory was written


@pytest.mark.parametrize("dtype", DTYPES)
def test_flax_weights_are_freed_before_the_transformers_side(tiny_checkpoint, converted, dtype):
    # verify's peak memory is one model's weights, not both: the Flax side is done (rounded
    # copy included) and released by the time transformers runs.
    ckpt = tiny_checkpoint("v2-tiny", "v2")
    result = run_verification(ckpt, converted(ckpt, dtype), VerifyOptions())
    assert result.report["passed"], result.report["failed"]
    assert result.models["flax"].variables == {"params": {}}


def test_processor_detections_keep_the_flax_weights_they_need(tiny_checkpoint, converted):
    ckpt = tiny_checkpoint("v2-tiny", "v2")
    options = VerifyOptions(processor_detections=True)
    result = run_verification(ckpt, converted(ckpt, "bfloat16"), options)
    assert result.report["passed"], result.report["failed"]
    assert result.models["flax"].variables["params"]
