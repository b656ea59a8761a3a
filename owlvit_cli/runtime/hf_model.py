"""Load and run a converted transformers model, under the same output names as the Flax side.

`apply_scenic_semantics` patches the two known modelling differences between stock
transformers and scenic so that a mapping check can demand ~1e-5 agreement:
scenic's box/objectness MLPs use tanh-approximate GELU, and its merged class-token LayerNorm
uses eps 1e-6. Stock users get neither, which is what the fidelity check measures.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from owlvit_cli.errors import ModelDirError, first_line
from owlvit_cli.model.model_dir import CONFIG_FILE, check_model_dir, read_json
from owlvit_cli.scenic.semantics import MERGED_LAYERNORM_EPSILON

# transformers' Owlv2 image processor pads every image to a square before resizing it, so a
# sliver (10000×10) costs the square (1.1 GiB of float32 and minutes of blurring). Such an image
# is refused (detect) or left out (verify's processor level) rather than left to hang; scenic's
# pipelines (owlvit_cli.scenic.preprocess) cost the model's input size for any aspect ratio.
PROCESSOR_SQUARE_BYTES = 256 * 2**20
PROCESSOR_SQUARE_WASTE = 16  # the square is this many times the image's area
# It then blurs the square (anti-aliasing) with a 2-D Gaussian kernel of 2·ceil(3σ)+1 taps a
# side, σ = (side / size − 1) / 2: the work grows with the square of the downscale. A
# 4000×3000 photo at the released sizes (768-1008) costs 6-11 G multiply-adds (2.5-8 s on a
# busy 2-core machine with transformers 5.24), an 8000×6000 one (48 Mpx) 100-185 G; at a
# 96 px test model's size a 4000×3000 photo costs some 730 G (4-6 min, 3.5 GB). Past this
# limit the image is refused or left out as above.
PROCESSOR_BLUR_LIMIT = 200e9


def processor_square_refusal(
    height: int, width: int, size: int | None = None, blurs: bool = False
) -> str | None:
    """Why the saved processor should not be run on an image of this size, or None; `blurs`
    says the processor blurs the square before resizing it to `size` (Owlv2's)."""
    side = max(height, width)
    nbytes = side * side * 3 * 4
    if nbytes > PROCESSOR_SQUARE_BYTES and side * side >= PROCESSOR_SQUARE_WASTE * height * width:
        return (
            f"the saved transformers processor pads a {width}×{height} image to a "
            f"{side}×{side} square ({nbytes / 2**30:.1f} GiB of float32) before resizing"
        )
    kernel = 2 * math.ceil(3 * max(0.0, (side / size - 1) / 2)) + 1 if size and blurs else 1
    work = side * side * 3 * kernel * kernel
    if work > PROCESSOR_BLUR_LIMIT:
        return (
            f"the saved transformers processor blurs a {side}×{side} square with a "
            f"{kernel}×{kernel} kernel before resizing it to {size}×{size} "
            f"({work / 1e9:,.0f} G multiply-adds)"
        )
    return None


def load_hf_model(
    directory: Path,
    scenic_semantics: bool = False,
    dtype: str | None = "float32",
    *,
    checked: bool = False,
) -> Any:
    """The detection model as `from_pretrained` gives it, offline, in eval mode: in `dtype`,
    or with `dtype=None` in whatever transformers loads by default (the stored dtype, which
    is what users get). `checked`: the caller has run `check_model_dir` on `directory`."""
    import torch
    from transformers import AutoModelForZeroShotObjectDetection
    from transformers.utils import logging as hf_logging

    if not checked:  # one line naming what is missing, before transformers tries
        check_model_dir(directory)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, loading = AutoModelForZeroShotObjectDetection.from_pretrained(
            str(directory),
            local_files_only=True,
            use_safetensors=True,
            output_loading_info=True,
            **({} if dtype is None else {"dtype": getattr(torch, dtype)}),
        )
    except Exception as exc:  # corrupt safetensors, bad json, wrong shapes: all the dir's fault
        raise ModelDirError(f"{directory}: cannot load the model ({first_line(exc)})") from exc
    check_loaded_strictly(directory, type(model).__name__, loading)
    check_config_read_as_written(directory, model.config.to_dict())
    model.eval()
    if scenic_semantics:
        apply_scenic_semantics(model)
    return model


def check_loaded_strictly(directory: Path, model_class: str, loading: dict[str, Any]) -> None:
    """transformers fills a parameter the files lack with random values and drops one it does
    not know, with at most a log line; here either is an error naming the tensors."""
    problems = []
    for key, what in (
        ("missing_keys", "tensors the model needs that the weights lack"),
        ("unexpected_keys", "tensors in the weights the model does not have"),
        ("mismatched_keys", "tensors whose shape does not fit"),
        ("error_msgs", "errors"),
    ):
        found = sorted(str(item) for item in loading.get(key) or ())
        if found:
            problems.append(f"{what} ({len(found)}): {', '.join(found[:5])}")
    if problems:
        raise ModelDirError(
            f"{directory}: the weights do not load strictly into {model_class}: "
            + "; ".join(problems)
        )


# The config fields a load may legitimately change: the version that wrote the file, and the
# dtype, which is how this project chose to load the weights (float32), not what was saved.
CONFIG_FIELDS_SET_AT_LOAD = {"transformers_version", "dtype", "torch_dtype"}


def check_config_read_as_written(directory: Path, loaded: dict[str, Any]) -> None:
    """Every field of config.json must reach the model unchanged: a transformers release that
    renames or reinterprets one would otherwise build a different model without a word."""
    written = read_json(directory / CONFIG_FILE, ModelDirError)
    changed = _changed_fields(written, json.loads(json.dumps(loaded)))
    if changed:
        raise ModelDirError(
            f"{directory / CONFIG_FILE}: transformers reads these fields differently than they "
            f"are written: {', '.join(changed[:6])}"
        )


def _changed_fields(written: dict[str, Any], loaded: dict[str, Any], prefix: str = "") -> list[str]:
    changed = []
    for key, value in written.items():
        if not prefix and key in CONFIG_FIELDS_SET_AT_LOAD:
            continue
        name = f"{prefix}{key}"
        if key not in loaded:
            changed.append(f"{name} (dropped)")
        elif isinstance(value, dict) and isinstance(loaded[key], dict):
            changed += _changed_fields(value, loaded[key], f"{name}.")
        elif loaded[key] != value:
            changed.append(f"{name} {value!r} → {loaded[key]!r}")
    return changed


def load_processor(directory: Path) -> Any:
    """The saved processor (image processor + tokenizer), offline."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelDirError(
            f"{directory}: cannot load the saved processor ({first_line(exc)})"
        ) from exc


def apply_scenic_semantics(model: Any) -> Any:
    from torch import nn

    model.layer_norm.eps = MERGED_LAYERNORM_EPSILON
    for name in ("box_head", "objectness_head"):
        head = getattr(model, name, None)
        if head is not None:
            head.gelu = nn.GELU(approximate="tanh")
    return model


def is_v2(model: Any) -> bool:
    return getattr(model, "objectness_head", None) is not None


def encoder_layers(model: Any) -> tuple[list[Any], list[Any]]:
    """The vision tower's encoder layers and the text tower's, in order."""
    base = model.base_model
    return list(base.vision_model.encoder.layers), list(base.text_model.encoder.layers)


def model_device(model: Any) -> str:
    """Where the weights are, as torch names it: `cpu`, `cuda`."""
    return next(model.parameters()).device.type


@contextlib.contextmanager
def layer_progress(models: Iterable[Any], listener: Callable[[], None]) -> Iterator[None]:
    """Call `listener` each time an encoder layer of one of `models` has run (forward hooks,
    which read nothing and change no output), so a forward pass shows real progress."""
    handles = []
    for model in {id(model): model for model in models}.values():
        for layers in encoder_layers(model):
            handles += [layer.register_forward_hook(lambda *_: listener()) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_hf_detection(
    model: Any, pixel_values: np.ndarray, input_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """Text-conditioned detection. pixel_values NCHW normalised; input_ids [B,Q,L]."""
    import torch

    batch, queries, length = input_ids.shape
    ids = torch.as_tensor(input_ids.reshape(batch * queries, length), dtype=torch.long)
    with torch.inference_mode():
        outputs = model(
            input_ids=ids,
            pixel_values=torch.as_tensor(pixel_values, dtype=torch.float32),
            attention_mask=(ids > 0).long(),
        )
    result = {
        "pred_logits": outputs.logits,
        "pred_boxes": outputs.pred_boxes,
        "class_embeddings": outputs.class_embeds,
        "query_embeddings": outputs.text_embeds.reshape(batch, queries, -1),
        "feature_map": outputs.image_embeds,
    }
    if is_v2(model):
        result["objectness_logits"] = outputs.objectness_logits
    return {key: value.detach().float().numpy() for key, value in result.items()}


def run_hf_image_only(model: Any, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
    """The image-only path that image-conditioned (one-shot) detection draws embeddings from,
    and the feature map that the class head scores such embeddings against."""
    import torch

    with torch.inference_mode():
        feature_map, _ = model.image_embedder(pixel_values=torch.as_tensor(pixel_values))
        batch, gh, gw, width = feature_map.shape
        feats = feature_map.reshape(batch, gh * gw, width)
        _, class_embeds = model.class_predictor(feats)
        result = {
            "class_embeddings_unnormalized": class_embeds,
            "pred_boxes": model.box_predictor(feats, feature_map),
            "feature_map": feature_map,
        }
        if is_v2(model):
            result["objectness_logits"] = model.objectness_predictor(feats)
    return {key: value.detach().float().numpy() for key, value in result.items()}


def run_hf_class_head(
    model: Any, feature_map: np.ndarray, query_embeddings: np.ndarray
) -> np.ndarray:
    """[B, gh, gw, D] features scored against [B, Q, E] query embeddings (text- or
    image-derived, not normalised): the class head alone, [B, N, Q] logits."""
    import torch

    features = torch.as_tensor(feature_map).to(model.dtype)  # numpy has no bfloat16
    batch, gh, gw, width = features.shape
    queries = torch.from_numpy(np.array(query_embeddings, np.float32)).to(model.dtype)
    mask = torch.ones(queries.shape[:2], dtype=features.dtype)
    with torch.inference_mode():
        logits, _ = model.class_predictor(features.reshape(batch, gh * gw, width), queries, mask)
    return logits.detach().float().numpy()


@contextlib.contextmanager
def stock_semantics(model: Any) -> Iterator[Any]:
    """Undo `apply_scenic_semantics` on exit, so one loaded model serves both checks."""
    saved_eps = model.layer_norm.eps
    heads = {n: getattr(model, n) for n in ("box_head", "objectness_head") if hasattr(model, n)}
    saved_gelu = {n: head.gelu for n, head in heads.items() if head is not None}
    try:
        yield model
    finally:
        model.layer_norm.eps = saved_eps
        for name, gelu in saved_gelu.items():
            heads[name].gelu = gelu


@contextlib.contextmanager
def reuse_tower_outputs(model: Any) -> Iterator[Any]:
    """Memoise the vision and text towers by input value, so running the model again on the
    same pixels and ids (with only the heads patched) costs just the heads."""
    towers = [model.base_model.vision_model, model.base_model.text_model]
    for tower in towers:
        tower.forward = _memoised(tower.forward)
    try:
        yield model
    finally:
        for tower in towers:
            del tower.forward  # back to the class's forward


def _memoised(forward: Callable[..., Any]) -> Callable[..., Any]:
    cache: list[tuple[list[Any], Any]] = []

    def run(*args: Any, **kwargs: Any) -> Any:
        values = [*args, *(kwargs[k] for k in sorted(kwargs))]
        for seen, result in cache:
            if len(seen) == len(values) and all(map(_same_value, seen, values)):
                return result
        result = forward(*args, **kwargs)
        cache.append((values, result))
        return result

    return run


def _same_value(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(torch.equal(a, b))
        )
    return a is b or a == b
