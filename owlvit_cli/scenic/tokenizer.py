"""scenic's query tokenization: OpenAI CLIP's BPE tokenizer, 16 ids per query.

The tokenizer is OpenAI's own `clip.simple_tokenizer` module from the installed clip package,
so cleaning (ftfy, HTML unescape, whitespace, lowercase) and BPE are the original's. Importing
the `clip` package runs its `__init__`, which imports torch (seconds) and warns about
`pkg_resources`; we load just the tokenizer module from the package's files instead, falling
back to the normal import (warning silenced) if that is not possible.

Quirks kept on purpose, because the model was trained with them: truncation to 16 can drop
EOT (the query then pools at SOT, so all such queries embed identically); '' is a real query
(SOT, EOT), while a padding slot is an all-zero row; a real token with id 0 ('!' without
end-of-word) is treated as padding by the model's mask.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

MAX_QUERY_LENGTH = 16
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
_MODULE_NAME = "owlvit_cli._clip_simple_tokenizer"


def clip_package_file(name: str) -> Path | None:
    """A file shipped in the installed clip package, found without importing the package."""
    spec = importlib.util.find_spec("clip")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / name).is_file():
            return Path(location) / name
    return None


def _load_tokenizer_module() -> ModuleType:
    path = clip_package_file("simple_tokenizer.py")
    if path is not None:
        module_spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
        if module_spec and module_spec.loader:
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[_MODULE_NAME] = module
            module_spec.loader.exec_module(module)
            return module
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from clip import simple_tokenizer
    return simple_tokenizer


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Any:
    """The shared `SimpleTokenizer` (building it parses 48k merges, so it is built once)."""
    return _load_tokenizer_module().SimpleTokenizer()


def tokenize(text: str, max_len: int = MAX_QUERY_LENGTH) -> list[int]:
    """[SOT] + BPE + [EOT], truncated to `max_len` (EOT may be lost), right-padded with 0."""
    if not isinstance(text, str):
        raise TypeError(f"query must be a str; got {type(text).__name__}")
    tokenizer = get_tokenizer()
    ids = [tokenizer.encoder[SOT_TOKEN], *tokenizer.encode(text), tokenizer.encoder[EOT_TOKEN]]
    ids = ids[:max_len]
    return ids + [0] * (max_len - len(ids))


def tokenize_queries(
    queries: Sequence[Sequence[str | None]], max_len: int = MAX_QUERY_LENGTH
) -> np.ndarray:
    """Per-image query lists → int32 [B, Q, max_len], Q = the longest list.

    `None` marks a padding slot (all-zero row, masked to -1e6 by the model); shorter lists are
    padded with such rows, as scenic's notebooks pad the query batch with zeros.
    """
    if isinstance(queries, str):
        raise TypeError("queries must be one list of strings per image, not a single string")
    per_image = []
    for image_queries in queries:
        if isinstance(image_queries, str):
            raise TypeError("queries must be one list of strings per image, not a list of str")
        per_image.append(list(image_queries))
    num_queries = max((len(q) for q in per_image), default=0)
    out = np.zeros((len(per_image), num_queries, max_len), dtype=np.int32)
    for b, image_queries in enumerate(per_image):
        for q, text in enumerate(image_queries):
            if text is not None:
                out[b, q] = tokenize(text, max_len)
    return out
