"""The scenic → transformers parameter mapping, declared once as a table of rules.

Each rule names a scenic path pattern (current names; the reader normalises the layouts), the
transformers name it becomes, and the reshape that turns Flax's layout into PyTorch's. A rule
with no target says why the tensor is ignored. `plan_mapping` applies the table strictly:
every source tensor is mapped or ignored with a reason, every shape is what the derived spec
says, and nothing maps twice. convert, inspect --mapping and verify all use this one plan.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from owlvit_cli.errors import MappingError
from owlvit_cli.model.dtypes import NamedTensor
from owlvit_cli.model.model_dir import FLAVORS
from owlvit_cli.model.spec import ModelSpec, checkpoint_spec, expected_shapes

if TYPE_CHECKING:  # numpy costs `inspect` 0.1 s of import, and planning needs no arrays
    import numpy as np

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Transform:
    """A Flax → PyTorch layout change, with its effect on shapes (for planning without data).

    `apply` returns a view (strides only, no copy): the writer copies each view once, straight
    into its output buffer in the target dtype, so no transform costs a pass of its own."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    shape: Callable[[Shape], Shape]
    keeps_bytes: bool = False  # C-order bytes unchanged: the writer may split the tensor


def _merge_heads(shape: Shape) -> Shape:
    return (shape[0], shape[1] * shape[2])


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("copy", lambda a: a, lambda s: s, keeps_bytes=True),
        # Dense kernel [in, out] → Linear weight [out, in].
        Transform("transpose", lambda a: a.T, lambda s: s[::-1]),
        # q/k/v kernel [width, heads, head_dim] → [heads·head_dim, width], heads kept in order.
        Transform(
            "merge_heads_in",
            lambda a: a.reshape(a.shape[0], -1).T,
            lambda s: _merge_heads(s)[::-1],
        ),
        # q/k/v bias [heads, head_dim] → [heads·head_dim].
        Transform("flatten", lambda a: a.reshape(-1), lambda s: (math.prod(s),), keeps_bytes=True),
        # out kernel [heads, head_dim, width] → [width, heads·head_dim].
        Transform(
            "merge_heads_out",
            lambda a: a.reshape(-1, a.shape[-1]).T,
            lambda s: (s[2], s[0] * s[1]),
        ),
        # Conv kernel [kh, kw, in, out] → [out, in, kh, kw].
        Transform(
            "conv_hwio_to_oihw",
            lambda a: a.transpose(3, 2, 0, 1),
            lambda s: (s[3], s[2], s[0], s[1]),
        ),
    )
}


@dataclass(frozen=True)
class Rule:
    """`source` is a regex over current scenic paths; `target` a template over its groups."""

    source: str
    target: str | None
    transform: str = "copy"
    reason: str = ""
    warn: bool = False


# Group values are renamed by these tables before they fill a target template.
GROUP_VALUES: dict[str, dict[str, str]] = {
    "tower": {"visual": "vision_model", "text": "text_model"},
    "ln": {"scale": "weight", "bias": "bias"},
    "qkv": {"query": "q_proj", "key": "k_proj", "value": "v_proj"},
    "block_ln": {"ln_0": "layer_norm1", "ln_1": "layer_norm2"},
    "mlp": {"c_fc": "fc1", "c_proj": "fc2"},
    "head": {"obj_box_head": "box_head", "objectness_head": "objectness_head"},
    "class_layer": {
        "Dense_0": "dense0",
        "logit_shift": "logit_shift",
        "logit_scale": "logit_scale",
    },
}

# Abbreviations the table uses: source prefixes (regex) and one target prefix (template).
VISUAL, TEXT = "backbone/clip/visual", "backbone/clip/text"
TOWER = r"backbone/clip/(?P<tower>visual|text)"
BLOCK = TOWER + r"/transformer/resblocks_(?P<i>\d+)"
LAYER = "{model}.{tower}.encoder.layers.{i}"
LN = r"(?P<ln>scale|bias)"
QKV = r"(?P<qkv>query|key|value)"
MLP = r"(?P<mlp>c_fc|c_proj)"
HEAD = r"(?P<head>obj_box_head|objectness_head)/Dense_(?P<j>[012])"
CLASS = r"class_head/(?P<class_layer>Dense_0|logit_shift|logit_scale)"
MASK_REASON = "mask head of the L/14+masks model: transformers has no mask head"

# fmt: off
RULES: tuple[Rule, ...] = (
    # scenic path (regex)                        transformers name (template)                              reshape
    Rule(r"backbone/clip/logit_scale",            "{model}.logit_scale"),
    Rule(f"{VISUAL}/conv1/kernel",                "{model}.vision_model.embeddings.patch_embedding.weight", "conv_hwio_to_oihw"),
    Rule(f"{VISUAL}/class_embedding",             "{model}.vision_model.embeddings.class_embedding"),
    Rule(f"{TOWER}/positional_embedding",         "{model}.{tower}.embeddings.position_embedding.weight"),
    Rule(f"{VISUAL}/ln_pre/{LN}",                 "{model}.vision_model.pre_layernorm.{ln}"),
    Rule(f"{VISUAL}/ln_post/{LN}",                "{model}.vision_model.post_layernorm.{ln}"),
    Rule(f"{BLOCK}/(?P<block_ln>ln_0|ln_1)/{LN}", LAYER + ".{block_ln}.{ln}"),
    Rule(f"{BLOCK}/attn/{QKV}/kernel",            LAYER + ".self_attn.{qkv}.weight",                        "merge_heads_in"),
    Rule(f"{BLOCK}/attn/{QKV}/bias",              LAYER + ".self_attn.{qkv}.bias",                          "flatten"),
    Rule(f"{BLOCK}/attn/out/kernel",              LAYER + ".self_attn.out_proj.weight",                     "merge_heads_out"),
    Rule(f"{BLOCK}/attn/out/bias",                LAYER + ".self_attn.out_proj.bias"),
    Rule(f"{BLOCK}/mlp/{MLP}/kernel",             LAYER + ".mlp.{mlp}.weight",                              "transpose"),
    Rule(f"{BLOCK}/mlp/{MLP}/bias",               LAYER + ".mlp.{mlp}.bias"),
    Rule(f"{TEXT}/token_embedding/embedding",     "{model}.text_model.embeddings.token_embedding.weight"),
    Rule(f"{TEXT}/ln_final/{LN}",                 "{model}.text_model.final_layer_norm.{ln}"),
    Rule(f"{TEXT}/text_projection/kernel",        "{model}.text_projection.weight",                         "transpose"),
    Rule(f"backbone/merged_class_token/{LN}",     "layer_norm.{ln}"),
    Rule(f"{CLASS}/kernel",                       "class_head.{class_layer}.weight",                        "transpose"),
    Rule(f"{CLASS}/bias",                         "class_head.{class_layer}.bias"),
    Rule(f"{HEAD}/kernel",                        "{head}.dense{j}.weight",                                 "transpose"),
    Rule(f"{HEAD}/bias",                          "{head}.dense{j}.bias"),
    Rule(r"class_head/padding(_bias)?",           None, reason="unused by scenic's detector (its loader deletes it)"),
    Rule(r"obj_mask_head/.*",                     None, reason=MASK_REASON, warn=True),
)
# fmt: on

_COMPILED = tuple((re.compile(rule.source + r"\Z"), rule) for rule in RULES)

# Targets with no source in any OWL checkpoint: how the converter fills them.
VISUAL_PROJECTION_NOTE = (
    "no source in OWL checkpoints (detection never uses it); filled with a truncated "
    "identity matrix eye(projection_dim, vision_hidden_size)"
)


@dataclass(frozen=True)
class TensorMap:
    """One target tensor and where it comes from."""

    target: str
    source: str | None
    transform: str
    shape: Shape

    def build(self, read: Callable[[str], np.ndarray]) -> np.ndarray:
        if self.source is None:
            return generated_tensor(self.target, self.shape)
        return TRANSFORMS[self.transform].apply(read(self.source))


@dataclass(frozen=True)
class IgnoredTensor:
    source: str
    reason: str
    warn: bool


@dataclass(frozen=True)
class MappingPlan:
    model_prefix: str
    tensors: tuple[TensorMap, ...]
    ignored: tuple[IgnoredTensor, ...]

    def target_shapes(self) -> dict[str, Shape]:
        return {t.target: t.shape for t in self.tensors}


def model_prefix(spec: ModelSpec) -> str:
    """transformers names the CLIP trunk after the model class: `owlvit` or `owlv2`."""
    return FLAVORS[spec.version].model_type


def match_rule(source: str) -> tuple[Rule, dict[str, str]] | None:
    for pattern, rule in _COMPILED:
        found = pattern.match(source)
        if found:
            groups = {k: GROUP_VALUES.get(k, {}).get(v, v) for k, v in found.groupdict().items()}
            return rule, groups
    return None


def plan_mapping(shapes: Mapping[str, Shape], spec: ModelSpec) -> MappingPlan:
    """Apply the rule table to {current scenic path: shape}; raise on anything unaccounted."""
    prefix = model_prefix(spec)
    expected = expected_shapes(spec)
    tensors: list[TensorMap] = []
    ignored: list[IgnoredTensor] = []
    unmapped: list[str] = []
    for source, shape in shapes.items():
        matched = match_rule(source)
        if matched is None or (matched[0].target and source not in expected):
            unmapped.append(source)
            continue
        rule, groups = matched
        if rule.target is None:
            ignored.append(IgnoredTensor(source, rule.reason, rule.warn))
            continue
        _check_shape(source, tuple(shape), expected[source])
        target = rule.target.format(model=prefix, **groups)
        tensors.append(
            TensorMap(
                target, source, rule.transform, TRANSFORMS[rule.transform].shape(tuple(shape))
            )
        )
    if unmapped:
        raise MappingError(
            f"{len(unmapped)} tensor(s) not part of an OWL-ViT model of this shape: "
            + ", ".join(sorted(unmapped)[:6])
            + (" …" if len(unmapped) > 6 else "")
        )
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise MappingError(
            f"checkpoint lacks {len(missing)} tensor(s): "
            + ", ".join(missing[:6])
            + (" …" if len(missing) > 6 else "")
        )
    vision, projection = spec.vision.hidden_size, spec.projection_dim
    tensors.append(
        TensorMap(f"{prefix}.visual_projection.weight", None, "generated", (projection, vision))
    )
    _check_unique(tensors)
    return MappingPlan(prefix, tuple(tensors), tuple(ignored))


def plan_checkpoint(tensors: Iterable[NamedTensor]) -> tuple[ModelSpec, MappingPlan]:
    """The model a checkpoint's tensors describe and the plan that maps them, each refused as
    convert refuses it: what every command that plans calls, once, and passes along."""
    tensors = list(tensors)
    spec = checkpoint_spec(tensors)
    return spec, plan_mapping({t.path: t.shape for t in tensors}, spec)


def _check_shape(source: str, shape: Shape, expected: Shape) -> None:
    if shape != expected:
        raise MappingError(
            f"tensor {source} has shape {list(shape)}, but the rest of the checkpoint implies "
            f"{list(expected)}"
        )


def _check_unique(tensors: list[TensorMap]) -> None:
    seen: dict[str, str | None] = {}
    for t in tensors:
        if t.target in seen:
            raise MappingError(f"{t.source} and {seen[t.target]} both map to {t.target}")
        seen[t.target] = t.source


def generated_tensor(target: str, shape: Shape) -> np.ndarray:
    """Deterministic values for targets without a source (see VISUAL_PROJECTION_NOTE)."""
    import numpy as np

    if target.endswith("visual_projection.weight"):
        return np.eye(shape[0], shape[1], dtype=np.float32)
    raise MappingError(f"no rule generates {target}")


def check_against_model(plan: MappingPlan, model_shapes: Mapping[str, Shape]) -> None:
    """The plan must fill exactly the transformers model's persistent tensors, shape for shape."""
    planned = plan.target_shapes()
    missing = sorted(set(model_shapes) - set(planned))
    unexpected = sorted(set(planned) - set(model_shapes))
    wrong = sorted(
        k
        for k in planned.keys() & model_shapes.keys()
        if tuple(planned[k]) != tuple(model_shapes[k])
    )
    problems = []
    if missing:
        problems.append("transformers tensors left unfilled: " + ", ".join(missing[:6]))
    if unexpected:
        problems.append("mapped tensors transformers does not have: " + ", ".join(unexpected[:6]))
    if wrong:
        problems.append(
            "shape mismatches: "
            + ", ".join(f"{k} {list(planned[k])} vs {list(model_shapes[k])}" for k in wrong[:4])
        )
    if problems:
        raise MappingError("; ".join(problems))


def mapping_rows(
    ckpt: Any, pattern: str | None = None, plan: MappingPlan | None = None
) -> list[dict[str, Any]]:
    """source → target per tensor, for `inspect --mapping`: `source` is the file's own path,
    `name` the current scenic name; `pattern` is a glob on either of them or on the target, as
    `inspect`'s tree matches either spelling. `plan` is the checkpoint's, if already made."""
    import fnmatch

    file_paths = {e.path: e.source_path for e in ckpt}
    if plan is None:
        _, plan = plan_checkpoint(ckpt)
    rows = [
        {
            "source": file_paths[t.source] if t.source else "(generated)",
            "name": t.source,
            "target": t.target,
            "transform": t.transform,
            "shape": list(t.shape),
            "reason": "",
        }
        for t in plan.tensors
    ] + [
        {
            "source": file_paths.get(i.source, i.source),
            "name": i.source,
            "target": None,
            "transform": "-",
            "shape": None,
            "reason": i.reason,
        }
        for i in plan.ignored
    ]
    if pattern:
        rows = [
            r
            for r in rows
            if any(
                fnmatch.fnmatchcase(r[key] or "", pattern) for key in ("source", "name", "target")
            )
        ]
    return rows
