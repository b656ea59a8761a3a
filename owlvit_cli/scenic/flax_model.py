"""A Flax re-implementation of scenic's OWL-ViT / OWLv2 detector, numerically faithful to it.

This is the reference side of `verify`: the scenic checkpoint's own tensors go in unchanged
(`Checkpoint.params_tree()` is the `params` collection as is), so any difference between this
model and a converted transformers model is either a mapping error or one of the known
modelling differences, never a difference in how the weights were read.

Fidelity choices, each of which moves outputs by more than float32 noise if changed:
the image is normalised inside the model; CLIP LayerNorms use eps 1e-5 but the merged class
token LayerNorm uses Flax's 1e-6; attention is Flax's own `MultiHeadDotProductAttention`, so
masking uses float32-min and the parameter layout is [width, heads, head_dim]; the text mask
also masks padded *query* rows; pooling takes the first argmax of the token ids (SOT for a
truncated query); the box and objectness MLPs use the tanh-approximate GELU; box bias is
computed from each patch's bottom-right corner and uses the grid width for both size terms.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from owlvit_cli.errors import CheckpointError
from owlvit_cli.model.spec import ModelSpec, expected_shapes
from owlvit_cli.model.tree import flatten, nest
from owlvit_cli.scenic.attention import blockwise_attention
from owlvit_cli.scenic.compilation_cache import enable_compilation_cache
from owlvit_cli.scenic.jax_runtime import configure_cpu_backend
from owlvit_cli.scenic.layer_signal import layer_signal
from owlvit_cli.scenic.semantics import (
    CLIP_LAYERNORM_EPSILON,
    CLIP_MEAN,
    CLIP_STD,
    MERGED_LAYERNORM_EPSILON,
)

CLASS_NORM_EPSILON = 1e-6  # added to the L2 norm, not to the squared norm.
BOX_LOGIT_EPSILON = 1e-4
PADDING_QUERY_LOGIT = -1e6  # scenic's fill value; transformers uses float32 min instead.

Array = jax.Array
Params = Mapping[str, Any]

configure_cpu_backend()  # before any computation starts the backend
enable_compilation_cache()  # before the first compilation, which would not look there


def quick_gelu(x: Array) -> Array:
    """OpenAI CLIP's sigmoid approximation of GELU; the towers were trained with it."""
    return x * jax.nn.sigmoid(1.702 * x)


def _logit(v: np.ndarray) -> np.ndarray:
    eps = np.float32(BOX_LOGIT_EPSILON)
    return (np.log(v + eps) - np.log1p(-v + eps)).astype(np.float32)


def compute_box_bias(grid_h: int, grid_w: int) -> np.ndarray:
    """Per-token prior for the box head, [grid_h * grid_w, 4] float32, row-major tokens.

    Boxes are predicted as offsets in logit space from this prior: centre at the patch's
    bottom-right corner (scenic's choice, not the centre), size one patch. Both size terms use
    1/grid_w, as scenic does; that only differs from 1/grid_h on non-square grids. Computed in
    float32 like scenic, so values match its to the last bit or so.
    """
    cols = np.arange(1, grid_w + 1, dtype=np.float32) / np.float32(grid_w)
    rows = np.arange(1, grid_h + 1, dtype=np.float32) / np.float32(grid_h)
    x, y = np.meshgrid(cols, rows)  # [grid_h, grid_w] each
    xy = np.clip(np.stack([x, y], axis=-1).reshape(-1, 2), 0.0, 1.0)
    size = np.full_like(xy, np.float32(1.0) / np.float32(grid_w))
    return np.concatenate([_logit(xy), _logit(size)], axis=-1)


def _clip_layernorm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=CLIP_LAYERNORM_EPSILON, name=name)


class Mlp(nn.Module):
    """The transformer block's feed-forward part: c_fc → quick_gelu → c_proj."""

    hidden: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = nn.Dense(self.hidden, name="c_fc")(x)
        return nn.Dense(x.shape[-1], name="c_proj")(quick_gelu(y))


class ResidualBlock(nn.Module):
    """Pre-norm block; the LayerNorms are named ln_0 (attention) and ln_1 (MLP) as in scenic."""

    num_heads: int
    mlp_hidden: int

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        y = _clip_layernorm("ln_0")(x)
        # Flax's own attention module gives scenic's exact parameter layout and masking
        # semantics; its arithmetic is flax's too, one head at a time (see attention.py).
        attention = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, attention_fn=blockwise_attention, name="attn"
        )
        x = x + attention(y, mask=mask)
        y = _clip_layernorm("ln_1")(x)
        return x + Mlp(self.mlp_hidden, name="mlp")(y)


_LAYER_LISTENERS: list[Callable[[], None]] = []


def _layer_done() -> None:
    for listener in tuple(_LAYER_LISTENERS):
        listener()


_signal_layer_done = layer_signal(_layer_done)  # a call the compilation cache can keep


@contextlib.contextmanager
def layer_progress(listener: Callable[[], None]) -> Iterator[None]:
    """Call `listener` (from a runtime thread) each time a running program has finished an
    encoder layer, vision or text, so a forward pass can show real progress. The programs
    always hold the signal (`layer_signal`): it reads one scalar of each layer's output, which
    leaves every output bit-identical and costs no measurable time (B/32 on CPU)."""
    _LAYER_LISTENERS.append(listener)
    try:
        yield
        jax.effects_barrier()  # every callback of the programs that ran has been called
    finally:
        _LAYER_LISTENERS.remove(listener)


class Transformer(nn.Module):
    num_layers: int
    num_heads: int
    mlp_hidden: int

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        for i in range(self.num_layers):
            x = ResidualBlock(self.num_heads, self.mlp_hidden, name=f"resblocks_{i}")(x, mask)
            # The operand ties the callback to this layer's result: without one, XLA is free to
            # run every callback as the program starts.
            _signal_layer_done(x[0, 0, 0])
        return x


class VisionTower(nn.Module):
    """CLIP ViT returning every token after ln_post and no projection (detection needs the map).

    Returns ([B, 1 + gh*gw, W] tokens, (gh, gw)). The grid comes from the conv output so the
    token order is the conv's row-major order, which the box bias assumes.
    """

    patch_size: int
    width: int
    num_layers: int
    num_heads: int
    mlp_hidden: int
    num_positions: int

    @nn.compact
    def __call__(self, images: Array) -> tuple[Array, tuple[int, int]]:
        # Flax's default 'SAME' padding is what scenic uses; it is no padding when the patch
        # size divides the image size, as for every released model.
        x = nn.Conv(
            self.width,
            kernel_size=(self.patch_size, self.patch_size),
            strides=(self.patch_size, self.patch_size),
            use_bias=False,
            name="conv1",
        )(images)
        batch, grid_h, grid_w, _ = x.shape
        x = x.reshape(batch, grid_h * grid_w, self.width)
        init = nn.initializers.normal(stddev=self.width**-0.5)
        class_embedding = self.param("class_embedding", init, (self.width,))
        positions = self.param("positional_embedding", init, (self.num_positions, self.width))
        cls = jnp.broadcast_to(class_embedding.astype(x.dtype), (batch, 1, self.width))
        x = jnp.concatenate([cls, x], axis=1) + positions[None]
        x = _clip_layernorm("ln_pre")(x)
        x = Transformer(self.num_layers, self.num_heads, self.mlp_hidden, name="transformer")(x)
        self.sow("intermediates", "transformer_output", x)
        x = _clip_layernorm("ln_post")(x)
        self.sow("intermediates", "ln_post_output", x)
        return x, (grid_h, grid_w)


class TextTower(nn.Module):
    """CLIP text encoder: [N, L] token ids → [N, E] unnormalised embeddings."""

    vocab_size: int
    width: int
    num_layers: int
    num_heads: int
    mlp_hidden: int
    context_length: int
    embed_dim: int

    @nn.compact
    def __call__(self, ids: Array) -> Array:
        # Padding (id 0) is masked as both query and key, on top of the causal mask: an
        # all-padding row then attends uniformly (every logit is float32 min), as in scenic.
        valid = ids > 0
        mask = nn.combine_masks(nn.make_attention_mask(valid, valid), nn.make_causal_mask(ids))
        x = nn.Embed(self.vocab_size, self.width, name="token_embedding")(ids)
        positions = self.param(
            "positional_embedding", nn.initializers.normal(0.01), (self.context_length, self.width)
        )
        x = x + positions[None]
        x = Transformer(self.num_layers, self.num_heads, self.mlp_hidden, name="transformer")(
            x, mask
        )
        x = _clip_layernorm("ln_final")(x)
        self.sow("intermediates", "last_hidden_state", x)
        # First argmax: EOT (the largest id) normally, SOT at position 0 for a truncated query.
        pooled = jnp.take_along_axis(x, jnp.argmax(ids, axis=-1)[:, None, None], axis=1)[:, 0]
        return nn.Dense(self.embed_dim, use_bias=False, name="text_projection")(pooled)


class Clip(nn.Module):
    spec: ModelSpec

    def setup(self) -> None:
        v, t = self.spec.vision, self.spec.text
        self.visual = VisionTower(
            patch_size=v.patch_size,
            width=v.hidden_size,
            num_layers=v.num_hidden_layers,
            num_heads=v.num_attention_heads,
            mlp_hidden=v.intermediate_size,
            num_positions=self.spec.num_patches + 1,
        )
        self.text = TextTower(
            vocab_size=t.vocab_size,
            width=t.hidden_size,
            num_layers=t.num_hidden_layers,
            num_heads=t.num_attention_heads,
            mlp_hidden=t.intermediate_size,
            context_length=t.max_position_embeddings,
            embed_dim=self.spec.projection_dim,
        )
        # CLIP's contrastive temperature: unused by detection, but part of the checkpoint.
        self.logit_scale = self.param("logit_scale", nn.initializers.zeros, ())


class Backbone(nn.Module):
    """scenic's `ClipImageTextEmbedder` with merge_class_token='mul-ln' (every released model)."""

    spec: ModelSpec

    def setup(self) -> None:
        self.clip = Clip(self.spec)
        self.merged_class_token = nn.LayerNorm(epsilon=MERGED_LAYERNORM_EPSILON)

    def embed_image(self, images: Array) -> Array:
        """[B, S, S, 3] in [0, 1] → feature map [B, gh, gw, W]."""
        mean = jnp.asarray(CLIP_MEAN, images.dtype)
        std = jnp.asarray(CLIP_STD, images.dtype)
        tokens, (grid_h, grid_w) = self.clip.visual((images - mean) / std)
        merged = self.merged_class_token(tokens[:, 1:] * tokens[:, :1])
        return merged.reshape(merged.shape[0], grid_h, grid_w, merged.shape[-1])

    def embed_text(self, ids: Array) -> Array:
        """[..., L] ids → [..., E]; leading axes are flattened only for the encoder."""
        flat = self.clip.text(ids.reshape(-1, ids.shape[-1]))
        return flat.reshape(*ids.shape[:-1], flat.shape[-1])

    def __call__(self, images: Array, ids: Array) -> tuple[Array, Array]:
        return self.embed_image(images), self.embed_text(ids)


class ClassHead(nn.Module):
    """Open-vocabulary classifier: cosine similarity with a learned per-token shift and scale."""

    embed_dim: int

    def setup(self) -> None:
        # Attribute names are the checkpoint's names; scenic's Dense was auto-named.
        self.Dense_0 = nn.Dense(self.embed_dim)
        self.logit_shift = nn.Dense(1)
        self.logit_scale = nn.Dense(1)

    def embed(self, features: Array) -> Array:
        """Unnormalised class embeddings: what an image-conditioned query is taken from."""
        return self.Dense_0(features)

    def __call__(self, features: Array, queries: Array, query_mask: Array) -> tuple[Array, Array]:
        """→ (pred_logits [B, N, Q], normalised class embeddings [B, N, E])."""
        emb = self.Dense_0(features)
        emb = emb / (jnp.linalg.norm(emb, axis=-1, keepdims=True) + CLASS_NORM_EPSILON)
        queries = queries / (jnp.linalg.norm(queries, axis=-1, keepdims=True) + CLASS_NORM_EPSILON)
        logits = jnp.einsum("...pd,...qd->...pq", emb, queries)
        shift = self.logit_shift(features)
        scale = nn.elu(self.logit_scale(features)) + 1.0
        logits = (logits + shift) * scale
        logits = jnp.where(query_mask[..., None, :] == 0, PADDING_QUERY_LOGIT, logits)
        return logits, emb


class PredictorMlp(nn.Module):
    """3-layer head (box or objectness); hidden width = input width; Flax's tanh GELU."""

    out_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.gelu(nn.Dense(x.shape[-1], name="Dense_0")(x), approximate=True)
        x = nn.gelu(nn.Dense(x.shape[-1], name="Dense_1")(x), approximate=True)
        return nn.Dense(self.out_dim, name="Dense_2")(x)


class OwlDetector(nn.Module):
    """scenic's `TextZeroShotDetectionModule` at inference (normalize=True, box_bias='both').

    Methods are meant for `Module.apply(..., method=...)`; `__call__` is the text-query path
    and is what `init` should trace so that every parameter is created.
    """

    spec: ModelSpec

    def setup(self) -> None:
        self.backbone = Backbone(self.spec)
        self.class_head = ClassHead(self.spec.projection_dim)
        self.obj_box_head = PredictorMlp(4)
        if self.spec.objectness_head:
            self.objectness_head = PredictorMlp(1)

    def _image_heads(self, images: Array) -> tuple[Array, dict[str, Array]]:
        feature_map = self.backbone.embed_image(images)
        b, gh, gw, w = feature_map.shape
        features = feature_map.reshape(b, gh * gw, w)
        box_bias = jnp.asarray(compute_box_bias(gh, gw))
        out = {
            "feature_map": feature_map,
            "pred_boxes": jax.nn.sigmoid(self.obj_box_head(features) + box_bias),
        }
        if self.spec.objectness_head:
            out["objectness_logits"] = self.objectness_head(features)[..., 0]
        return features, out

    def embed_text(self, ids: Array) -> Array:
        """[B, Q, L] ids → query embeddings [B, Q, E], not normalised."""
        return self.backbone.embed_text(ids)

    def embed_image(self, images: Array) -> dict[str, Array]:
        """Image-only path: boxes, feature map and the raw class embeddings (one-shot queries)."""
        features, out = self._image_heads(images)
        out["class_embeddings_unnormalized"] = self.class_head.embed(features)
        return out

    def detect_with_embeddings(
        self, images: Array, query_embeddings: Array, query_mask: Array
    ) -> dict[str, Array]:
        """Detection against given query embeddings (text- or image-derived), [B, Q, E]."""
        features, out = self._image_heads(images)
        logits, class_embeddings = self.class_head(features, query_embeddings, query_mask)
        out.update(pred_logits=logits, class_embeddings=class_embeddings)
        return out

    def score_features(
        self, feature_map: Array, query_embeddings: Array, query_mask: Array
    ) -> Array:
        """The class head alone: [B, gh, gw, D] features against [B, Q, E] queries, [B, N, Q]
        logits (scenic's `class_predictor` on `image_features` it already has)."""
        b, gh, gw, w = feature_map.shape
        logits, _ = self.class_head(
            feature_map.reshape(b, gh * gw, w), query_embeddings, query_mask
        )
        return logits

    def __call__(self, images: Array, ids: Array) -> dict[str, Array]:
        """Text-query detection: [B, S, S, 3] in [0, 1] and [B, Q, L] ids, as scenic's call."""
        out = self.detect_and_embed(images, ids)
        del out["class_embeddings_unnormalized"]  # not a scenic output; XLA drops its compute
        return out

    def detect_and_embed(self, images: Array, ids: Array) -> dict[str, Array]:
        """`__call__` plus the image-only class embeddings, from one vision pass: verify
        compares both paths and should not pay for the vision tower twice."""
        query_embeddings = self.embed_text(ids)
        # A query whose first token is 0 is a padding slot.
        query_mask = (ids[..., 0] > 0).astype(jnp.float32)
        features, out = self._image_heads(images)
        logits, class_embeddings = self.class_head(features, query_embeddings, query_mask)
        out.update(
            pred_logits=logits,
            class_embeddings=class_embeddings,
            query_embeddings=query_embeddings,
            class_embeddings_unnormalized=self.class_head.embed(features),
        )
        return out


def build_flax_model(spec: ModelSpec) -> OwlDetector:
    """The detector for `spec`; its parameter tree is `expected_shapes(spec)`, nested."""
    return OwlDetector(spec)


def dummy_inputs(spec: ModelSpec, batch: int = 1, queries: int = 1) -> tuple[Array, Array]:
    """Zero inputs of the right shapes, for `init` or `jax.eval_shape(model.init, ...)`."""
    size = spec.vision.image_size
    images = jnp.zeros((batch, size, size, 3), jnp.float32)
    ids = jnp.zeros((batch, queries, spec.text.max_position_embeddings), jnp.int32)
    return images, ids


def checked_params(spec: ModelSpec, params_tree: Mapping[str, Any]) -> dict[str, Any]:
    """The params the model uses, or a `CheckpointError` naming what is missing or misshapen.

    Flax would report a missing leaf deep inside tracing; checking against the spec first gives
    one readable line. Extra leaves (e.g. scenic's unused `class_head/padding`) are dropped.
    """
    flat = dict(flatten(params_tree))
    expected = expected_shapes(spec)
    missing = [p for p in expected if p not in flat]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise CheckpointError(f"params lack {', '.join(missing[:3])}{more}")
    wrong = [
        f"{p} is {list(np.shape(flat[p]))}, expected {list(s)}"
        for p, s in expected.items()
        if tuple(np.shape(flat[p])) != s
    ]
    if wrong:
        raise CheckpointError(f"params do not fit the model: {wrong[0]}")
    return nest({path: jnp.asarray(flat[path], jnp.float32) for path in expected})


class FlaxRunner:
    """Holds the params on device and jit-compiled entry points; returns numpy arrays.

    Params are passed to the compiled functions as arguments, never closed over, so XLA does
    not fold gigabytes of weights into the program as constants. All matmuls run at the highest
    precision so an accelerator (which may default to TF32/bf16 passes) reproduces the float32
    CPU reference instead of drifting by 1e-3.
    """

    def __init__(
        self, spec: ModelSpec, params_tree: Mapping[str, Any], *, jit: bool = True
    ) -> None:
        self.spec = spec
        self.model = build_flax_model(spec)
        self.variables = {"params": checked_params(spec, params_tree)}
        wrap: Callable[[Callable[..., Any]], Callable[..., Any]] = jax.jit if jit else _identity
        self._detect = wrap(self._make(self.model.__call__))
        self._detect_intermediates = wrap(self._make(self.model.__call__, intermediates=True))
        self._embed_image = wrap(self._make(self.model.embed_image))
        self._embed_text = wrap(self._make(self.model.embed_text))
        self._detect_with_embeddings = wrap(self._make(self.model.detect_with_embeddings))
        self._detect_and_embed = wrap(self._make(self.model.detect_and_embed))
        self._score_features = wrap(self._make(self.model.score_features))
        self._compiled: dict[tuple[tuple[int, ...], tuple[int, ...]], Any] = {}

    def with_params(self, params_tree: Mapping[str, Any]) -> FlaxRunner:
        """The same jitted and compiled programs on other params of the same shapes (verify's
        copy rounded to a directory's dtype): params are arguments, so nothing recompiles."""
        other = copy.copy(self)
        other.variables = {"params": checked_params(self.spec, params_tree)}
        return other

    def round_params(self, dtype: str) -> None:
        """Replace the params by their values rounded to `dtype` (the numpy cast, round to
        nearest even, that the safetensors writer applied) and back in float32: the model a
        directory stored in `dtype` holds. One leaf at a time, each float32 original freed as
        its rounded copy is made, so an L/14 never has two float32 copies (1.7 GB each)."""
        from owlvit_cli.model.dtypes import numpy_dtype

        target = numpy_dtype(dtype)

        def round_tree(tree: dict[str, Any]) -> None:
            for key, value in tree.items():
                if isinstance(value, dict):
                    round_tree(value)
                else:
                    tree[key] = jnp.asarray(np.asarray(value).astype(target).astype(np.float32))
                    del value

        round_tree(self.variables["params"])

    def release_params(self) -> None:
        """Free the params (the compiled programs stay): verify's Flax side is done before the
        transformers model runs, and the weights are the bulk of its memory."""
        self.variables = {"params": {}}

    @property
    def layers_per_pass(self) -> int:
        """Encoder layers one `detect` runs: the vision tower's, then the text tower's."""
        return self.spec.vision.num_hidden_layers + self.spec.text.num_hidden_layers

    @property
    def device(self) -> str:
        return jax.devices()[0].platform

    def _make(self, method: Callable[..., Any], intermediates: bool = False) -> Callable[..., Any]:
        model = self.model

        def run(variables: Params, *args: Array) -> Any:
            with jax.default_matmul_precision("highest"):
                if intermediates:
                    return model.apply(variables, *args, method=method, mutable=["intermediates"])
                return model.apply(variables, *args, method=method)

        return run

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        size = self.spec.vision.image_size
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"images must be [B, {size}, {size}, 3]; got {list(images.shape)}")
        return images

    def _check_ids(self, input_ids: np.ndarray, batch: int) -> np.ndarray:
        length = self.spec.text.max_position_embeddings
        ids = np.asarray(input_ids)
        if ids.ndim != 3 or ids.shape[0] != batch or ids.shape[2] != length:
            raise ValueError(f"input_ids must be [{batch}, Q, {length}]; got {list(ids.shape)}")
        return ids.astype(np.int32)

    def compile(self, images_nhwc: np.ndarray, input_ids: np.ndarray) -> None:
        """Compile `detect(..., image_only=True)` ahead of time for these shapes, so compile
        and forward can be timed apart (verify's report, the benchmark)."""
        images = self._check_images(images_nhwc)
        ids = self._check_ids(input_ids, images.shape[0])
        if not hasattr(self._detect_and_embed, "lower"):  # jit=False: nothing to compile
            return
        lowered = self._detect_and_embed.lower(self.variables, images, ids)
        self._compiled[(images.shape, ids.shape)] = lowered.compile()

    def detect(
        self,
        images_nhwc: np.ndarray,
        input_ids: np.ndarray,
        *,
        intermediates: bool = False,
        image_only: bool = False,
    ) -> dict[str, np.ndarray]:
        """scenic's text-query outputs; with `image_only`, also the image-only path's
        `class_embeddings_unnormalized`; with `intermediates`, also the tower internals.

        Intermediates: `vision_transformer_output` and `vision_ln_post_output` [B, N+1, W],
        `text_last_hidden_state` [B, Q, L, T] (meaningful only where ids > 0).
        """
        images = self._check_images(images_nhwc)
        ids = self._check_ids(input_ids, images.shape[0])
        if image_only:
            run = self._compiled.get((images.shape, ids.shape), self._detect_and_embed)
            return _to_numpy(run(self.variables, images, ids))
        if not intermediates:
            return _to_numpy(self._detect(self.variables, images, ids))
        out, state = self._detect_intermediates(self.variables, images, ids)
        result = _to_numpy(out)
        sown = state["intermediates"]["backbone"]["clip"]
        result["vision_transformer_output"] = np.asarray(sown["visual"]["transformer_output"][0])
        result["vision_ln_post_output"] = np.asarray(sown["visual"]["ln_post_output"][0])
        hidden = np.asarray(sown["text"]["last_hidden_state"][0])
        result["text_last_hidden_state"] = hidden.reshape(*ids.shape, hidden.shape[-1])
        return result

    def image_embed(self, images_nhwc: np.ndarray) -> dict[str, np.ndarray]:
        """Image-only path: `class_embeddings_unnormalized`, `pred_boxes`, `feature_map`
        (+ `objectness_logits` for v2)."""
        return _to_numpy(self._embed_image(self.variables, self._check_images(images_nhwc)))

    def text_embed(self, input_ids: np.ndarray) -> np.ndarray:
        """[B, Q, L] ids → [B, Q, E] query embeddings (not normalised)."""
        ids = np.asarray(input_ids)
        return np.asarray(self._embed_text(self.variables, self._check_ids(ids, ids.shape[0])))

    def detect_with_embeddings(
        self, images_nhwc: np.ndarray, query_embeddings: np.ndarray, query_mask: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Detection with precomputed queries, e.g. class embeddings picked from another image."""
        images = self._check_images(images_nhwc)
        queries = np.asarray(query_embeddings, np.float32)
        mask = np.asarray(query_mask, np.float32)
        if queries.ndim != 3 or queries.shape[0] != images.shape[0]:
            raise ValueError(f"query_embeddings must be [B, Q, E]; got {list(queries.shape)}")
        if mask.shape != queries.shape[:2]:
            raise ValueError(
                f"query_mask must be {list(queries.shape[:2])}; got {list(mask.shape)}"
            )
        return _to_numpy(self._detect_with_embeddings(self.variables, images, queries, mask))

    def score_features(self, feature_map: np.ndarray, query_embeddings: np.ndarray) -> np.ndarray:
        """[B, gh, gw, D] features (from `detect` or `image_embed`) scored against [B, Q, E]
        query embeddings by the class head alone: [B, N, Q] logits, no tower run again."""
        features = np.asarray(feature_map, np.float32)
        queries = np.asarray(query_embeddings, np.float32)
        mask = np.ones(queries.shape[:2], np.float32)
        return np.asarray(self._score_features(self.variables, features, queries, mask))


def _identity(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def _to_numpy(tree: Mapping[str, Array]) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in tree.items()}
