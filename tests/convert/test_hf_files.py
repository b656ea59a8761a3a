"""The config, processor and tokenizer files convert writes without transformers are the ones
transformers' own classes write, and the tensor plan is exactly a transformers model's."""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from owlvit_cli.convert import hf_files
from owlvit_cli.convert import tokenizer_files as tok
from owlvit_cli.convert.mapping import plan_mapping
from owlvit_cli.model.model_dir import (
    CONFIG_FILE,
    FLAVORS,
    IMAGE_PROCESSOR_FILE,
    MERGES_FILE,
    PROCESSOR_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    VOCAB_FILE,
)
from owlvit_cli.model.spec import VARIANTS, ModelSpec, expected_shapes
from owlvit_cli.scenic.tokenizer import get_tokenizer as clip_simple_tokenizer
from tests.convert import transformers_side

DTYPES = ("float32", "float16", "bfloat16")
# Fields a loaded tokenizer's saved config has and a written one legitimately lacks: where
# `from_pretrained` found the files (provenance, not settings; transformers 5 saves them back).
LOAD_PROVENANCE = {"is_local", "local_files_only"}


def with_version(spec: ModelSpec, version: int) -> ModelSpec:
    return dataclasses.replace(spec, objectness_head=version == 2)


SPECS = {
    f"{name}-as-v{version}": with_version(spec, version)
    for name, spec in VARIANTS.items()
    for version in (1, 2)
}


@cache
def reference_dir(name: str, dtype: str, root: Path) -> Path:
    return transformers_side.save_files(root / f"{name}-{dtype}", SPECS[name], dtype)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):
    """(ours, transformers') directories per (spec name, dtype)."""
    root = tmp_path_factory.mktemp("hf_files")

    def make(name: str, dtype: str = "float32") -> tuple[Path, Path]:
        ours = root / f"ours-{name}-{dtype}"
        if not ours.exists():
            ours.mkdir()
            hf_files.write_hf_files(ours, SPECS[name], dtype)
        return ours, reference_dir(name, dtype, root)

    return make


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_config_is_what_transformers_saves(tmp_path: Path, name: str, dtype: str):
    spec = SPECS[name]
    transformers_side.hf_config(spec, dtype).save_pretrained(str(tmp_path))
    assert hf_files.config_dict(spec, dtype) == read_json(tmp_path / CONFIG_FILE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_planned_tensors_are_a_transformers_models_state_dict(name: str, dtype: str):
    """The shape check convert used to make at run time, for every model it can meet."""
    spec = SPECS[name]
    plan = plan_mapping(expected_shapes(spec), spec)
    planned = {name: (tuple(shape), dtype) for name, shape in plan.target_shapes().items()}
    assert planned == transformers_side.meta_state_dict(spec, dtype)


@pytest.mark.parametrize("name", ["v1-tiny-as-v1", "v2-tiny-as-v2", "v2-l14-as-v2"])
def test_processor_and_tokenizer_files_are_what_transformers_saves(written, name: str):
    ours, theirs = written(name)
    for file in (PROCESSOR_FILE, TOKENIZER_FILE, VOCAB_FILE):
        assert read_json(ours / file) == read_json(theirs / file), file
    assert (ours / MERGES_FILE).read_text() == (theirs / MERGES_FILE).read_text()
    saved = read_json(theirs / TOKENIZER_CONFIG_FILE)
    assert set(saved) >= LOAD_PROVENANCE
    expected = {k: v for k, v in saved.items() if k not in LOAD_PROVENANCE}
    assert read_json(ours / TOKENIZER_CONFIG_FILE) == expected
    # transformers 4.x reads the image processor alone from preprocessor_config.json
    image_processor = read_json(theirs / PROCESSOR_FILE)["image_processor"]
    processor_class = FLAVORS[SPECS[name].version].processor_class
    legacy = {**image_processor, "processor_class": processor_class}
    assert read_json(ours / IMAGE_PROCESSOR_FILE) == legacy


def test_written_files_are_all_the_files_transformers_saves(written):
    """...plus the image processor alone, for transformers 4.x."""
    ours, theirs = written("v2-tiny-as-v2")
    expected = {p.name for p in theirs.iterdir()} | {IMAGE_PROCESSOR_FILE}
    assert {p.name for p in ours.iterdir()} == expected


def test_clip_vocabulary_is_simple_tokenizers():
    bpe = clip_simple_tokenizer()
    vocab = tok.clip_vocabulary()
    assert vocab.ids == bpe.encoder and list(vocab.ids) == list(bpe.encoder)
    assert vocab.merges == sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    assert len(vocab.tokens) == 49408 and len(vocab.merges) == 48894


CORPUS = [
    "a photo of a cat",
    "Dog!",
    "!",
    "hello!world",
    "",
    "   ",
    "A RED car",
    "  spaces\tand\nnewlines ",
    "don't stop, it's fine",
    "3 apples and 12 pears",
    "café crème brûlée",
    "Ünïcödé ß straße",
    "日本語のテキスト",
    "🐶 dog 🐕‍🦺 emoji 👍🏽",
    "a very long query with many many words that goes past sixteen tokens for sure yes",
    "<|endoftext|> spelled out",
    "&amp; html",
]


@pytest.mark.parametrize("name", ["v1-tiny-as-v1", "v2-tiny-as-v2"])
def test_tokenizer_corpus_gives_identical_ids_and_masks(written, tmp_path: Path, name: str):
    from transformers import AutoTokenizer

    ours_dir, _ = written(name)
    ours = AutoTokenizer.from_pretrained(str(ours_dir), local_files_only=True)
    theirs = transformers_side.tokenizer(tmp_path, SPECS[name])
    settings = {"padding": "max_length", "truncation": True}
    for text in CORPUS:
        assert ours(text, **settings) == theirs(text, **settings), text
    batch = {"padding": True, "truncation": True, "return_tensors": "np"}
    ours_batch, theirs_batch = ours(CORPUS, **batch), theirs(CORPUS, **batch)
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(ours_batch[key], theirs_batch[key])
    assert ours("Dog!", **settings)["input_ids"][:4] == [49406, 1929, 256, 49407]


@pytest.mark.parametrize("name", ["v1-tiny-as-v1"])
def test_tokenizer_json_alone_tokenizes_the_corpus_alike(written, tmp_path: Path, name: str):
    """tokenizer.json's own pipeline (what transformers 4.x and `tokenizers` users run; the
    installed transformers rebuilds CLIPTokenizer's from the vocabulary in it)."""
    from tokenizers import Tokenizer

    ours_dir, _ = written(name)
    raw = Tokenizer.from_file(str(ours_dir / TOKENIZER_FILE))
    raw.encode_special_tokens = True  # split_special_tokens
    raw.enable_truncation(16)
    raw.enable_padding(length=16, pad_id=0, pad_token=tok.PAD_TOKEN)
    theirs = transformers_side.tokenizer(tmp_path, SPECS[name])
    for text in CORPUS:
        encoded = theirs(text, padding="max_length", truncation=True)
        got = raw.encode(text)
        assert (got.ids, got.attention_mask) == (
            encoded["input_ids"],
            encoded["attention_mask"],
        ), text


def images() -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (37, 91, 3), dtype=np.uint8)
    return [
        Image.fromarray(noise),  # wide
        Image.fromarray(noise.transpose(1, 0, 2).copy()),  # tall
        Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)),  # square, larger
        Image.fromarray(noise[..., 0]).convert("L"),  # greyscale
        Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8), "RGBA"),
    ]


@pytest.mark.parametrize("name", ["v1-tiny-as-v1", "v2-tiny-as-v2"])
def test_processor_gives_identical_pixel_values(written, tmp_path: Path, name: str):
    from transformers import AutoProcessor

    ours_dir, _ = written(name)
    ours = AutoProcessor.from_pretrained(str(ours_dir), local_files_only=True)
    theirs = transformers_side.processor(tmp_path, SPECS[name])
    assert type(ours).__name__ == FLAVORS[SPECS[name].version].processor_class
    for image in images():
        got = ours(images=image, return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(
            got, theirs(images=image, return_tensors="np")["pixel_values"]
        )


@pytest.mark.parametrize(
    ("version", "key"), [("4.45.2", "torch_dtype"), ("4.56.0", "dtype"), ("5.24.0", "dtype")]
)
def test_dtype_is_named_as_the_installed_transformers_names_it(version: str, key: str):
    assert hf_files.dtype_key(version) == key
