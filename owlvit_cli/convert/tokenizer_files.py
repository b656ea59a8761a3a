"""transformers tokenizer files built offline from OpenAI CLIP's own BPE vocabulary.

The `clip` package ships `bpe_simple_vocab_16e6.txt.gz` and builds its vocabulary from it;
we take that vocabulary (`encoder`) and merge ranks (`bpe_ranks`) as they are, so vocab.json
and merges.txt hold exactly OpenAI's 49,408 tokens and 48,894 merges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from owlvit_cli.scenic.tokenizer import MAX_QUERY_LENGTH, get_tokenizer

PAD_TOKEN = "!"  # id 0, as the public OWL-ViT tokenizers use


def write_vocab_files(directory: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt in the format CLIPTokenizer reads."""
    bpe = get_tokenizer()
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps(bpe.encoder, ensure_ascii=False), encoding="utf-8")
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.__getitem__)
    lines = ["#version: 0.2", *(" ".join(pair) for pair in merges)]
    merges_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def build_hf_tokenizer(directory: Path) -> Any:
    """A CLIPTokenizer that tokenizes like scenic for ordinary queries.

    `split_special_tokens=True` keeps a `!` inside a query as BPE (`!</w>`, id 256) as scenic
    does, instead of the pad token (id 0) that the model would then mask out.
    """
    from transformers import CLIPTokenizer

    write_vocab_files(directory)
    settings = {
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": PAD_TOKEN,
        "model_max_length": MAX_QUERY_LENGTH,
        "split_special_tokens": True,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    # Loading from files (not the constructor, whose arguments differ across transformers
    # versions) lets transformers build its own fast tokenizer from vocab.json + merges.txt.
    return CLIPTokenizer.from_pretrained(str(directory))
