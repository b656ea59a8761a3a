"""The rule table: every transform, every variant at full size (shapes only), strictness."""

from __future__ import annotations

import numpy as np
import pytest

from owlvit_cli.convert.mapping import (
    RULES,
    TRANSFORMS,
    check_against_model,
    match_rule,
    plan_mapping,
)
from owlvit_cli.errors import MappingError
from owlvit_cli.model.spec import VARIANTS, expected_shapes


def test_qkv_kernel_keeps_heads_in_order():
    width, heads, head_dim = 6, 3, 2
    kernel = np.arange(width * heads * head_dim, dtype=np.float32).reshape(width, heads, head_dim)
    weight = TRANSFORMS["merge_heads_in"].apply(kernel)
    assert weight.shape == (heads * head_dim, width)
    x = np.random.default_rng(0).standard_normal(width).astype(np.float32)
    flax_out = np.einsum("w,whd->hd", x, kernel).reshape(-1)  # head-major
    np.testing.assert_allclose(weight @ x, flax_out, rtol=1e-6)


def test_out_kernel_sums_over_heads():
    heads, head_dim, width = 3, 2, 5
    kernel = np.random.default_rng(1).standard_normal((heads, head_dim, width)).astype(np.float32)
    per_head = np.random.default_rng(2).standard_normal((heads, head_dim)).astype(np.float32)
    weight = TRANSFORMS["merge_heads_out"].apply(kernel)
    np.testing.assert_allclose(
        weight @ per_head.reshape(-1), np.einsum("hd,hdw->w", per_head, kernel), rtol=1e-5
    )


def test_conv_and_dense_layouts():
    conv = np.random.default_rng(3).standard_normal((4, 4, 3, 8)).astype(np.float32)
    oihw = TRANSFORMS["conv_hwio_to_oihw"].apply(conv)
    assert oihw.shape == (8, 3, 4, 4) and oihw[5, 2, 1, 3] == conv[1, 3, 2, 5]
    dense = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(TRANSFORMS["transpose"].apply(dense), dense.T)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_shape_functions_agree_with_data(name: str):
    shapes = {
        "copy": (3, 4),
        "transpose": (3, 4),
        "merge_heads_in": (6, 3, 2),
        "flatten": (3, 2),
        "merge_heads_out": (3, 2, 6),
        "conv_hwio_to_oihw": (4, 4, 3, 8),
    }
    array = np.zeros(shapes[name], np.float32)
    transform = TRANSFORMS[name]
    assert transform.apply(array).shape == transform.shape(array.shape)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (
            "backbone/clip/visual/transformer/resblocks_3/ln_0/scale",
            "owlvit.vision_model.encoder.layers.3.layer_norm1.weight",
        ),
        (
            "backbone/clip/text/transformer/resblocks_11/attn/value/kernel",
            "owlvit.text_model.encoder.layers.11.self_attn.v_proj.weight",
        ),
        (
            "backbone/clip/text/transformer/resblocks_0/mlp/c_proj/bias",
            "owlvit.text_model.encoder.layers.0.mlp.fc2.bias",
        ),
        ("backbone/merged_class_token/scale", "layer_norm.weight"),
        ("obj_box_head/Dense_2/kernel", "box_head.dense2.weight"),
        ("class_head/logit_shift/bias", "class_head.logit_shift.bias"),
        ("backbone/clip/visual/ln_pre/bias", "owlvit.vision_model.pre_layernorm.bias"),
    ],
)
def test_rule_targets(source: str, target: str):
    rule, groups = match_rule(source)
    assert rule.target.format(model="owlvit", **groups) == target


def test_ignored_leaves_have_reasons():
    for source in ("class_head/padding", "class_head/padding_bias", "obj_mask_head/Dense_0/kernel"):
        rule, _ = match_rule(source)
        assert rule.target is None and rule.reason


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_full_size_variants_map_completely_onto_transformers(variant: str):
    """Full size on shapes only: a meta-device transformers model, no weights allocated."""
    from tests.convert.transformers_side import meta_state_dict

    spec = VARIANTS[variant]
    plan = plan_mapping(expected_shapes(spec), spec)
    shapes = {name: shape for name, (shape, _) in meta_state_dict(spec, "float32").items()}
    check_against_model(plan, shapes)
    assert len(plan.tensors) == len(expected_shapes(spec)) + 1  # + visual_projection
    assert plan.model_prefix == ("owlv2" if spec.version == 2 else "owlvit")


def test_extra_ignored_and_unknown_tensors():
    spec = VARIANTS["v1-tiny"]
    shapes = {**expected_shapes(spec), "class_head/padding": (1, 16), "obj_mask_head/x": (2,)}
    plan = plan_mapping(shapes, spec)
    assert {i.source for i in plan.ignored} == {"class_head/padding", "obj_mask_head/x"}
    assert [i.warn for i in plan.ignored if i.source == "obj_mask_head/x"] == [True]
    with pytest.raises(MappingError, match=r"not part of an OWL-ViT model.*mystery"):
        plan_mapping({**expected_shapes(spec), "backbone/mystery/kernel": (3,)}, spec)


def test_missing_and_misshapen_tensors_are_named():
    spec = VARIANTS["v2-tiny"]
    shapes = expected_shapes(spec)
    del shapes["objectness_head/Dense_1/bias"]
    with pytest.raises(MappingError, match=r"lacks 1 tensor.*objectness_head/Dense_1/bias"):
        plan_mapping(shapes, spec)
    shapes = {**expected_shapes(spec), "obj_box_head/Dense_0/kernel": (128, 127)}
    with pytest.raises(MappingError, match="obj_box_head/Dense_0/kernel has shape"):
        plan_mapping(shapes, spec)


def test_check_against_model_reports_differences():
    spec = VARIANTS["v1-tiny"]
    plan = plan_mapping(expected_shapes(spec), spec)
    shapes = plan.target_shapes()
    shapes.pop("layer_norm.bias")
    shapes["extra.weight"] = (1,)
    shapes["class_head.dense0.bias"] = (99,)
    with pytest.raises(MappingError, match=r"unfilled: extra\.weight.*does not have: layer_norm"):
        check_against_model(plan, shapes)


def test_every_rule_is_used_or_ignoring():
    used = set()
    for variant in ("v1-tiny", "v2-tiny"):
        for source in expected_shapes(VARIANTS[variant]):
            used.add(match_rule(source)[0].source)
    assert {r.source for r in RULES if r.target} == used
