"""The Flax detector against genuine scenic outputs, plus invariants checked by hand."""

from __future__ import annotations

from functools import cache
from typing import Any

import jax
import numpy as np
import pytest

from owlvit_cli.checkpoint.reader import open_checkpoint
from owlvit_cli.errors import CheckpointError
from owlvit_cli.model.spec import VARIANTS, ModelSpec, expected_shapes, spec_from_shapes
from owlvit_cli.model.tree import flatten, nest
from owlvit_cli.scenic.flax_model import (
    MERGED_LAYERNORM_EPSILON,
    PADDING_QUERY_LOGIT,
    FlaxRunner,
    build_flax_model,
    checked_params,
    compute_box_bias,
    dummy_inputs,
    layer_progress,
)
from owlvit_cli.testing import fixtures
from tests.helpers import REFERENCE, REFERENCE_NAMES

REFERENCES = tuple(sorted(REFERENCE_NAMES))
TOL = 1e-5
SOT, EOT = 49406, 49407


class Reference:
    """One scenic reference model: its runner, the stored arrays, and our outputs, computed once."""

    def __init__(self, name: str) -> None:
        with open_checkpoint(REFERENCE / f"ref_{name}_checkpoint") as ckpt:
            self.spec = spec_from_shapes({entry.path: entry.shape for entry in ckpt})
            self.runner = FlaxRunner(self.spec, ckpt.params_tree(np.float32))
        with np.load(REFERENCE / f"ref_{name}_io.npz", allow_pickle=False) as data:
            self.data = dict(data)
        self.out = self.runner.detect(
            self.data["images_nhwc"], self.data["input_ids"], intermediates=True
        )
        self.image_only = self.runner.image_embed(self.data["images_nhwc"])


@cache
def reference(name: str) -> Reference:
    return Reference(name)


@cache
def tiny_runner(variant: str, jit: bool = True) -> FlaxRunner:
    spec = VARIANTS[variant]
    return FlaxRunner(spec, nest(fixtures.random_params(spec, seed=1)), jit=jit)


def tiny_inputs(spec: ModelSpec, batch: int = 2, queries: int = 3) -> tuple[np.ndarray, Any]:
    rng = np.random.default_rng(0)
    size = spec.vision.image_size
    images = rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)
    ids = np.zeros((batch, queries, spec.text.max_position_embeddings), np.int32)
    ids[:, :, 0] = SOT
    ids[:, :, 1] = rng.integers(1, 49000, (batch, queries))
    ids[:, :, 2] = EOT
    ids[0, -1] = 0  # one padding slot
    return images, ids


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


# --- genuine scenic reference -------------------------------------------------------------

PLAIN_OUTPUTS = (
    "pred_boxes",
    "class_embeddings",
    "feature_map",
    "vision_transformer_output",
    "vision_ln_post_output",
)


@pytest.mark.parametrize("name", REFERENCES)
@pytest.mark.parametrize("key", PLAIN_OUTPUTS)
def test_reference_outputs(name: str, key: str) -> None:
    ref = reference(name)
    assert max_diff(ref.out[key], ref.data[key]) <= TOL


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_pred_logits(name: str) -> None:
    ref = reference(name)
    real = ref.data["query_mask"].astype(bool)  # [B, Q]
    ours = np.moveaxis(ref.out["pred_logits"], -1, 1)  # [B, Q, N]
    theirs = np.moveaxis(ref.data["pred_logits"], -1, 1)
    assert max_diff(ours[real], theirs[real]) <= TOL
    assert (~real).any()
    assert np.all(ours[~real] == PADDING_QUERY_LOGIT)
    assert np.all(theirs[~real] == PADDING_QUERY_LOGIT)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_query_embeddings(name: str) -> None:
    ref = reference(name)
    real = ref.data["query_mask"].astype(bool)
    assert max_diff(ref.out["query_embeddings"][real], ref.data["query_embeddings"][real]) <= TOL


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_text_hidden_state(name: str) -> None:
    ref = reference(name)
    valid = ref.data["attention_mask"].astype(bool)  # [B, Q, L]
    ours = ref.out["text_last_hidden_state"][valid]
    assert max_diff(ours, ref.data["text_last_hidden_state"][valid]) <= TOL


def test_reference_objectness() -> None:
    ref = reference("v2_release")
    assert max_diff(ref.out["objectness_logits"], ref.data["objectness_logits"]) <= TOL
    assert max_diff(ref.image_only["objectness_logits"], ref.data["objectness_logits"]) <= TOL
    assert "objectness_logits" not in reference("v1_release").out


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_image_only_path(name: str) -> None:
    ref = reference(name)
    unnormalized = ref.image_only["class_embeddings_unnormalized"]
    assert max_diff(unnormalized, ref.data["class_embeddings_unnormalized"]) <= TOL
    assert max_diff(ref.image_only["pred_boxes"], ref.data["pred_boxes"]) <= TOL
    assert max_diff(ref.image_only["feature_map"], ref.data["feature_map"]) <= TOL
    # With queries, the same embeddings come back divided by (norm + 1e-6).
    norm = np.linalg.norm(unnormalized, axis=-1, keepdims=True)
    assert max_diff(unnormalized / (norm + 1e-6), ref.out["class_embeddings"]) <= TOL


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_box_bias(name: str) -> None:
    ref = reference(name)
    grid = ref.spec.grid_size
    assert max_diff(compute_box_bias(grid, grid), ref.data["box_bias"]) <= TOL


def test_reference_input_ids_need_no_pickle() -> None:
    with np.load(REFERENCE / "ref_v1_release_io.npz", allow_pickle=False) as data:
        assert data["queries"].dtype.kind == "U"


# --- hand-checked invariants --------------------------------------------------------------


def test_box_bias_known_cells() -> None:
    bias = compute_box_bias(4, 4)
    assert bias.shape == (16, 4) and bias.dtype == np.float32
    logit = lambda v: np.log(v + 1e-4) - np.log1p(-v + 1e-4)  # noqa: E731
    # Token 0 is row 0, col 0: its bottom-right corner is (1/4, 1/4).
    np.testing.assert_allclose(bias[0], [logit(0.25)] * 4, rtol=1e-6, atol=1e-6)
    # The last token's corner is (1, 1): logit ≈ 9.21 because of the 1e-4 guard (float32, as
    # scenic computes it, loses ~2e-4 here to the rounding of 1 - 1e-4).
    np.testing.assert_allclose(bias[15, :2], [9.2104, 9.2104], atol=1e-3)
    # Token 1 is row 0, col 1 (row-major): x moves, y does not.
    np.testing.assert_allclose(bias[1, :2], [logit(0.5), logit(0.25)], rtol=1e-6, atol=1e-6)


def test_box_bias_non_square_grid_uses_width_for_both_sizes() -> None:
    bias = compute_box_bias(2, 5)
    assert bias.shape == (10, 4)
    logit = lambda v: np.log(v + 1e-4) - np.log1p(-v + 1e-4)  # noqa: E731
    np.testing.assert_allclose(bias[:, 2:], logit(1 / 5), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(bias[6, :2], [logit(2 / 5), logit(1.0)], atol=1e-3)


def test_merged_class_token_layernorm_epsilon() -> None:
    runner = tiny_runner("v1-tiny")
    bound = runner.model.bind(runner.variables)
    assert bound.backbone.merged_class_token.epsilon == MERGED_LAYERNORM_EPSILON == 1e-6
    # And numerically, against scenic: feature_map == LN(patch tokens * class token) of
    # ln_post's output with eps 1e-6; eps 1e-5 is measurably off (≈3e-5) on these weights.
    ref = reference("v1_current")
    tokens = ref.out["vision_ln_post_output"].astype(np.float64)
    merged = tokens[:, 1:] * tokens[:, :1]
    params = runner_params(ref.runner)["backbone"]["merged_class_token"]
    mean = merged.mean(-1, keepdims=True)
    var = merged.var(-1, keepdims=True)
    target = ref.data["feature_map"].reshape(merged.shape)
    for eps, close in ((1e-6, True), (1e-5, False)):
        layernorm = (merged - mean) / np.sqrt(var + eps) * params["scale"] + params["bias"]
        assert (max_diff(layernorm, target) <= TOL) == close, eps


def runner_params(runner: FlaxRunner) -> dict[str, Any]:
    return jax.tree_util.tree_map(np.asarray, runner.variables["params"])


def test_padding_queries_get_fixed_logit() -> None:
    runner = tiny_runner("v2-tiny")
    images, ids = tiny_inputs(runner.spec)
    out = runner.detect(images, ids)
    assert np.all(out["pred_logits"][0, :, -1] == PADDING_QUERY_LOGIT)
    assert np.all(out["pred_logits"][:, :, :-1] > PADDING_QUERY_LOGIT / 10)
    assert np.all(out["pred_logits"][1] > PADDING_QUERY_LOGIT / 10)


def test_truncated_queries_pool_at_sot() -> None:
    """Without EOT the argmax is SOT at position 0, which sees only itself: text is ignored."""
    runner = tiny_runner("v1-tiny")
    length = runner.spec.text.max_position_embeddings
    ids = np.zeros((1, 3, length), np.int32)
    ids[0, :, 0] = SOT
    ids[0, 0, 1:] = np.arange(100, 100 + length - 1)  # truncated: no EOT
    ids[0, 1, 1:] = np.arange(2000, 2000 + length - 1)  # truncated, different text
    ids[0, 2, 1:3] = [100, EOT]
    emb = runner.text_embed(ids)[0]
    np.testing.assert_array_equal(emb[0], emb[1])
    assert max_diff(emb[0], emb[2]) > 1e-3


def test_tiny_output_shapes() -> None:
    for variant in ("v1-tiny", "v2-tiny"):
        runner = tiny_runner(variant)
        spec = runner.spec
        images, ids = tiny_inputs(spec)
        b, q, n, g = 2, 3, spec.num_patches, spec.grid_size
        w, e = spec.vision.hidden_size, spec.projection_dim
        shapes = {
            "pred_logits": (b, n, q),
            "pred_boxes": (b, n, 4),
            "class_embeddings": (b, n, e),
            "query_embeddings": (b, q, e),
            "feature_map": (b, g, g, w),
        }
        if spec.objectness_head:
            shapes["objectness_logits"] = (b, n)
        out = runner.detect(images, ids)
        assert {k: v.shape for k, v in out.items()} == shapes
        assert all(v.dtype == np.float32 for v in out.values())
        assert np.all((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1))
        image_only = runner.image_embed(images)
        expected = {
            k: shapes[k] for k in ("pred_boxes", "feature_map", "objectness_logits") if k in shapes
        }
        expected["class_embeddings_unnormalized"] = (b, n, e)
        assert {k: v.shape for k, v in image_only.items()} == expected


def test_jit_and_eager_agree() -> None:
    jitted, eager = tiny_runner("v2-tiny"), tiny_runner("v2-tiny", jit=False)
    images, ids = tiny_inputs(jitted.spec)
    a, b = jitted.detect(images, ids), eager.detect(images, ids)
    assert a.keys() == b.keys()
    for key in a:
        assert max_diff(a[key], b[key]) <= TOL, key


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_layer_progress_hears_every_encoder_layer_once(jit: bool) -> None:
    """A forward pass reports each vision and text layer as it finishes; listening changes
    no output, and a listener hears nothing once its block has ended."""
    runner = tiny_runner("v2-tiny", jit=jit)
    images, ids = tiny_inputs(runner.spec)
    before = runner.detect(images, ids, image_only=True)
    heard: list[int] = []
    with layer_progress(lambda: heard.append(1)):
        during = runner.detect(images, ids, image_only=True)
    assert len(heard) == runner.layers_per_pass == 4  # two vision and two text layers
    runner.detect(images, ids, image_only=True)
    jax.effects_barrier()
    assert len(heard) == 4
    for key in before:
        assert np.array_equal(before[key], during[key]), key


def test_detect_with_embeddings_matches_text_path() -> None:
    runner = tiny_runner("v2-tiny")
    images, ids = tiny_inputs(runner.spec)
    out = runner.detect(images, ids)
    np.testing.assert_allclose(runner.text_embed(ids), out["query_embeddings"], atol=TOL)
    mask = (ids[..., 0] > 0).astype(np.float32)
    again = runner.detect_with_embeddings(images, out["query_embeddings"], mask)
    for key in ("pred_logits", "pred_boxes", "class_embeddings", "objectness_logits"):
        assert max_diff(again[key], out[key]) <= TOL, key


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parameter_tree_matches_spec(variant: str) -> None:
    """Abstract init (no memory, no compute), so the full-size variants are free to check."""
    spec = VARIANTS[variant]
    model = build_flax_model(spec)
    shapes = jax.eval_shape(model.init, jax.random.key(0), *dummy_inputs(spec))
    assert set(shapes) == {"params"}
    got = {path: tuple(leaf.shape) for path, leaf in flatten(shapes["params"])}
    assert got == expected_shapes(spec)


def test_checked_params_reports_missing_and_misshapen_and_drops_extras() -> None:
    spec = VARIANTS["v1-tiny"]
    flat = fixtures.random_params(spec)
    extra = {**flat, "class_head/padding": np.zeros((1,), np.float32)}
    kept = dict(flatten(checked_params(spec, nest(extra))))
    assert set(kept) == set(flat)
    missing = {k: v for k, v in flat.items() if k != "obj_box_head/Dense_2/bias"}
    with pytest.raises(CheckpointError, match="obj_box_head/Dense_2/bias"):
        checked_params(spec, nest(missing))
    wrong = {**flat, "class_head/Dense_0/bias": np.zeros((7,), np.float32)}
    with pytest.raises(CheckpointError, match=r"class_head/Dense_0/bias is \[7\]"):
        checked_params(spec, nest(wrong))


def test_runner_rejects_wrong_input_shapes() -> None:
    runner = tiny_runner("v1-tiny")
    images, ids = tiny_inputs(runner.spec)
    with pytest.raises(ValueError, match="images must be"):
        runner.detect(images[:, :32], ids)
    with pytest.raises(ValueError, match="input_ids must be"):
        runner.detect(images, ids[..., :8])


def live_param_bytes() -> int:
    return sum(a.nbytes for a in jax.live_arrays())


def test_round_params_replaces_the_float32_params_instead_of_copying_them() -> None:
    import ml_dtypes

    runner = tiny_runner("v2-tiny")
    before = {path: np.asarray(a) for path, a in flatten(runner.variables["params"])}
    weights = sum(a.nbytes for a in before.values())
    live = live_param_bytes()
    runner.round_params("bfloat16")
    after = dict(flatten(runner.variables["params"]))
    for path, original in before.items():
        expected = original.astype(ml_dtypes.bfloat16).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(after[path]), expected, err_msg=path)
    del before, after
    # The float32 originals are gone: no second copy of the weights stays alive.
    assert live_param_bytes() < live + weights / 2


def test_released_params_leave_the_compiled_programs() -> None:
    runner = tiny_runner("v2-tiny")
    images, ids = tiny_inputs(runner.spec)
    runner.compile(images, ids)
    weights = sum(a.nbytes for _, a in flatten(runner.variables["params"]))
    live = live_param_bytes()
    runner.release_params()
    assert runner.variables == {"params": {}}
    assert live - live_param_bytes() >= weights  # the weights are freed, not just unlisted
