"""The model description, derived from tensor shapes alone: the one source of config truth.

Nothing comes from file names or flags: head counts are the attention kernels' head
axis, image size comes from the position table, and so on. The same description also says
which tensors (and shapes) a checkpoint of that model must hold, which is what the fixture
builder writes and what the mapping checks against.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from owlvit_cli.errors import CheckpointError
from owlvit_cli.model.dtypes import NamedTensor, dtype_problems

VISUAL = "backbone/clip/visual"
TEXT = "backbone/clip/text"
LAYER_RE = re.compile(r"/resblocks_(\d+)/")
OPENAI_CLIP_VOCAB = 49408
HEAD_MLPS = ("obj_box_head", "objectness_head")


@dataclass(frozen=True)
class VisionSpec:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    patch_size: int
    image_size: int


@dataclass(frozen=True)
class TextSpec:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    vocab_size: int


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build either side's model for one checkpoint."""

    vision: VisionSpec
    text: TextSpec
    projection_dim: int
    objectness_head: bool

    @property
    def version(self) -> int:
        """OWLv2 is OWL-ViT plus an objectness head; nothing else tells them apart."""
        return 2 if self.objectness_head else 1

    @property
    def grid_size(self) -> int:
        return self.vision.image_size // self.vision.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def to_json(self) -> dict[str, Any]:
        return {
            "vision": asdict(self.vision),
            "text": asdict(self.text),
            "projection_dim": self.projection_dim,
            "objectness_head": self.objectness_head,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            VisionSpec(**data["vision"]),
            TextSpec(**data["text"]),
            data["projection_dim"],
            data["objectness_head"],
        )


def spec_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> ModelSpec:
    """Derive the spec from a {current-scenic path: shape} table."""
    get = _ShapeGetter(shapes)
    patch, patch2, channels, width = get(f"{VISUAL}/conv1/kernel", 4)
    positions, _ = get(f"{VISUAL}/positional_embedding", 2)
    grid = math.isqrt(max(positions - 1, 0))
    if positions < 1 or patch != patch2 or channels != 3 or grid * grid != positions - 1:
        raise CheckpointError(
            f"vision stem shapes do not fit a ViT: conv1 {[patch, patch2, channels, width]}, "
            f"{positions} position rows (expected 1 + a square number)"
        )
    vocab, text_width = get(f"{TEXT}/token_embedding/embedding", 2)
    context, _ = get(f"{TEXT}/positional_embedding", 2)
    _, embed = get(f"{TEXT}/text_projection/kernel", 2)
    vision = VisionSpec(
        hidden_size=width,
        num_hidden_layers=_count_layers(shapes, VISUAL),
        num_attention_heads=_heads(get, VISUAL),
        intermediate_size=get(f"{VISUAL}/transformer/resblocks_0/mlp/c_fc/kernel", 2)[1],
        patch_size=patch,
        image_size=grid * patch,
    )
    text = TextSpec(
        hidden_size=text_width,
        num_hidden_layers=_count_layers(shapes, TEXT),
        num_attention_heads=_heads(get, TEXT),
        intermediate_size=get(f"{TEXT}/transformer/resblocks_0/mlp/c_fc/kernel", 2)[1],
        max_position_embeddings=context,
        vocab_size=vocab,
    )
    spec = ModelSpec(vision, text, embed, any(p.startswith("objectness_head/") for p in shapes))
    problems = spec_problems(spec)
    if problems:
        raise CheckpointError("; ".join(problems))
    return spec


def checkpoint_spec(tensors: Iterable[NamedTensor]) -> ModelSpec:
    """The model a checkpoint's tensors describe; `CheckpointError` if they describe none."""
    tensors = list(tensors)
    problems = dtype_problems(tensors)
    if problems:
        raise CheckpointError(problems[0])
    return spec_from_shapes({t.path: t.shape for t in tensors})


def spec_problems(spec: ModelSpec) -> list[str]:
    """Shapes that index cleanly but describe no model transformers (or scenic) can run, each
    naming the tensor it was read from and what was expected."""
    v, t = spec.vision, spec.text
    problems = []
    if v.patch_size <= 0:
        problems.append(f"{VISUAL}/conv1/kernel has patch size {v.patch_size}; expected ≥ 1")
    if v.image_size <= 0:
        problems.append(
            f"{VISUAL}/positional_embedding has no patch rows (image size 0); "
            "expected 1 + grid² rows"
        )
    for tower, dims in ((VISUAL, v), (TEXT, t)):
        kernel = f"{tower}/transformer/resblocks_0/attn/query/kernel"
        if dims.num_attention_heads <= 0:
            problems.append(f"{kernel} has 0 heads on its head axis; expected ≥ 1")
        elif dims.hidden_size % dims.num_attention_heads:
            problems.append(
                f"{kernel}: {dims.num_attention_heads} heads do not divide the width "
                f"{dims.hidden_size}"
            )
        if dims.hidden_size <= 0:
            problems.append(f"{tower} has width 0; expected ≥ 1")
    if t.vocab_size != OPENAI_CLIP_VOCAB:
        problems.append(
            f"{TEXT}/token_embedding/embedding has {t.vocab_size} rows; expected "
            f"{OPENAI_CLIP_VOCAB} (the CLIP BPE vocabulary the tokenizer uses)"
        )
    if t.max_position_embeddings <= 0:
        problems.append(f"{TEXT}/positional_embedding has 0 rows (context length); expected ≥ 1")
    return problems


class _ShapeGetter:
    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.shapes = shapes

    def __call__(self, path: str, ndim: int) -> tuple[int, ...]:
        if path not in self.shapes:
            raise CheckpointError(f"not an OWL-ViT checkpoint: missing tensor {path}")
        shape = tuple(self.shapes[path])
        if len(shape) != ndim:
            raise CheckpointError(f"tensor {path} has shape {list(shape)}; expected {ndim} dims")
        return shape


def _count_layers(shapes: Mapping[str, tuple[int, ...]], tower: str) -> int:
    prefix = f"{tower}/transformer/"
    indices = {
        int(m.group(1)) for p in shapes if p.startswith(prefix) and (m := LAYER_RE.search(p))
    }
    if not indices or indices != set(range(len(indices))):
        raise CheckpointError(f"{tower} blocks are not numbered 0..N-1: found {sorted(indices)}")
    return len(indices)


def _heads(get: _ShapeGetter, tower: str) -> int:
    """Flax keeps heads as their own kernel axis: [width, heads, head_dim]."""
    path = f"{tower}/transformer/resblocks_0/attn/query/kernel"
    width, heads, head_dim = get(path, 3)
    if heads and heads * head_dim != width:
        raise CheckpointError(
            f"tensor {path} has shape {[width, heads, head_dim]}; expected "
            f"[width, heads, width / heads]"
        )
    return heads


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter a scenic checkpoint of this model holds, under current names."""
    v, t = spec.vision, spec.text
    shapes: dict[str, tuple[int, ...]] = {
        "backbone/clip/logit_scale": (),
        f"{VISUAL}/conv1/kernel": (v.patch_size, v.patch_size, 3, v.hidden_size),
        f"{VISUAL}/class_embedding": (v.hidden_size,),
        f"{VISUAL}/positional_embedding": (spec.num_patches + 1, v.hidden_size),
        **_layernorm(f"{VISUAL}/ln_pre", v.hidden_size),
        **_layernorm(f"{VISUAL}/ln_post", v.hidden_size),
        f"{TEXT}/token_embedding/embedding": (t.vocab_size, t.hidden_size),
        f"{TEXT}/positional_embedding": (t.max_position_embeddings, t.hidden_size),
        **_layernorm(f"{TEXT}/ln_final", t.hidden_size),
        f"{TEXT}/text_projection/kernel": (t.hidden_size, spec.projection_dim),
        **_layernorm("backbone/merged_class_token", v.hidden_size),
        **_dense("class_head/Dense_0", v.hidden_size, spec.projection_dim),
        **_dense("class_head/logit_shift", v.hidden_size, 1),
        **_dense("class_head/logit_scale", v.hidden_size, 1),
    }
    for tower, dims in ((VISUAL, v), (TEXT, t)):
        for i in range(dims.num_hidden_layers):
            shapes.update(_block(f"{tower}/transformer/resblocks_{i}", dims))
    heads = HEAD_MLPS if spec.objectness_head else HEAD_MLPS[:1]
    for head in heads:
        out = 4 if head == "obj_box_head" else 1
        shapes.update(_dense(f"{head}/Dense_0", v.hidden_size, v.hidden_size))
        shapes.update(_dense(f"{head}/Dense_1", v.hidden_size, v.hidden_size))
        shapes.update(_dense(f"{head}/Dense_2", v.hidden_size, out))
    return shapes


def _layernorm(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}/scale": (width,), f"{prefix}/bias": (width,)}


def _dense(prefix: str, fan_in: int, fan_out: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}/kernel": (fan_in, fan_out), f"{prefix}/bias": (fan_out,)}


def _block(prefix: str, dims: VisionSpec | TextSpec) -> dict[str, tuple[int, ...]]:
    width, heads = dims.hidden_size, dims.num_attention_heads
    head_dim = width // heads
    shapes = {
        **_layernorm(f"{prefix}/ln_0", width),
        **_layernorm(f"{prefix}/ln_1", width),
        f"{prefix}/attn/out/kernel": (heads, head_dim, width),
        f"{prefix}/attn/out/bias": (width,),
        **_dense(f"{prefix}/mlp/c_fc", width, dims.intermediate_size),
        **_dense(f"{prefix}/mlp/c_proj", dims.intermediate_size, width),
    }
    for name in ("query", "key", "value"):
        shapes[f"{prefix}/attn/{name}/kernel"] = (width, heads, head_dim)
        shapes[f"{prefix}/attn/{name}/bias"] = (heads, head_dim)
    return shapes


def _variant(
    version: int, vision: tuple[int, int, int, int, int], text: tuple[int, int, int]
) -> ModelSpec:
    width, layers, heads, patch, size = vision
    t_width, t_layers, t_heads = text
    return ModelSpec(
        VisionSpec(width, layers, heads, 4 * width, patch, size),
        TextSpec(t_width, t_layers, t_heads, 4 * t_width, 16, OPENAI_CLIP_VOCAB),
        projection_dim=t_width,
        objectness_head=version == 2,
    )


# The released models, and tiny ones for tests and the demo.
VARIANTS: dict[str, ModelSpec] = {
    "v1-b32": _variant(1, (768, 12, 12, 32, 768), (512, 12, 8)),
    "v1-b16": _variant(1, (768, 12, 12, 16, 768), (512, 12, 8)),
    "v1-l14": _variant(1, (1024, 24, 16, 14, 840), (768, 12, 12)),
    "v2-b16": _variant(2, (768, 12, 12, 16, 960), (512, 12, 8)),
    "v2-l14": _variant(2, (1024, 24, 16, 14, 1008), (768, 12, 12)),
    "v1-tiny": _variant(1, (128, 2, 2, 16, 64), (32, 2, 2)),
    "v2-tiny": _variant(2, (128, 2, 2, 16, 64), (32, 2, 2)),
}
