"""The tokenizer files of a converted model, made from OpenAI CLIP's own BPE file.

The `clip` package ships `bpe_simple_vocab_16e6.txt.gz`; its `SimpleTokenizer` turns that
file into a vocabulary (the 256 byte symbols, the same with `</w>`, one token per merge, then
the two special tokens) and merge ranks. `clip_vocabulary` does exactly that, without
importing the tokenizer module (ftfy, regex) or building its lookup tables, so vocab.json and
merges.txt hold OpenAI's 49,408 tokens and 48,894 merges (tests/convert/test_hf_files.py
checks both against `SimpleTokenizer`).

tokenizer.json is built with the `tokenizers` library the way transformers' `CLIPTokenizer`
builds its backend (normalizer, pre-tokenizer, BPE model, post-processor, decoder), so
transformers loads it as its own; tokenizer_config.json holds the settings this project
chose: pad token `!` (id 0, as the public OWL-ViT tokenizers use), `model_max_length` 16, and
`split_special_tokens`, which keeps a `!` inside a query as BPE (`!</w>`, id 256) as scenic
does, instead of the pad id that the model would then mask out.
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from typing import Any

from owlvit_cli.scenic.tokenizer import (
    EOT_TOKEN,
    MAX_QUERY_LENGTH,
    SOT_TOKEN,
    clip_package_file,
    get_tokenizer,
)

PAD_TOKEN = "!"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # what SimpleTokenizer keeps of the file: 48,894 merges
END_OF_WORD = "</w>"
# CLIP's pre-tokenization pattern (clip.simple_tokenizer, transformers' CLIPTokenizer).
CLIP_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
    r"""[^\s\p{L}\p{N}]+"""
)


@dataclass(frozen=True)
class ClipVocabulary:
    tokens: list[str]  # in id order
    merges: list[tuple[str, str]]  # in rank order

    @functools.cached_property
    def ids(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}


@functools.lru_cache(maxsize=1)
def clip_vocabulary() -> ClipVocabulary:
    """The vocabulary and merges `clip.simple_tokenizer.SimpleTokenizer` builds from its file."""
    path = clip_package_file(BPE_FILE)
    if path is None:  # clip installed in a form we cannot read files from: ask its tokenizer
        bpe = get_tokenizer()
        return ClipVocabulary(list(bpe.encoder), sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get))
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges: list[tuple[str, str]] = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # type: ignore[misc]
    symbols = list(_bytes_to_unicode().values())
    tokens = [
        *symbols,
        *(symbol + END_OF_WORD for symbol in symbols),
        *("".join(merge) for merge in merges),
        SOT_TOKEN,
        EOT_TOKEN,
    ]
    return ClipVocabulary(tokens, merges)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table, in clip's order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def vocab_json(vocab: ClipVocabulary) -> str:
    return json.dumps(vocab.ids, ensure_ascii=False)


def merges_txt(vocab: ClipVocabulary) -> str:
    return "\n".join(["#version: 0.2", *(" ".join(pair) for pair in vocab.merges)]) + "\n"


def tokenizer_json(vocab: ClipVocabulary) -> str:
    """transformers' CLIPTokenizer backend, as its `tokenizer.json`."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import BPE

    ids = vocab.ids
    tokenizer = Tokenizer(
        BPE(
            vocab=ids,
            merges=vocab.merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix=END_OF_WORD,
            fuse_unk=False,
            unk_token=EOT_TOKEN,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(
        (EOT_TOKEN, ids[EOT_TOKEN]), (SOT_TOKEN, ids[SOT_TOKEN]), False, False
    )
    specials = (PAD_TOKEN, SOT_TOKEN, EOT_TOKEN)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer.to_str()  # compact: half the bytes of transformers' indented file


def tokenizer_config(processor_class: str) -> dict[str, Any]:
    """What `CLIPTokenizer.save_pretrained` writes for these settings, inside a processor."""
    return {
        "backend": "tokenizers",
        "bos_token": SOT_TOKEN,
        "eos_token": EOT_TOKEN,
        "model_max_length": MAX_QUERY_LENGTH,
        "pad_token": PAD_TOKEN,
        "processor_class": processor_class,
        "split_special_tokens": True,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": EOT_TOKEN,
    }
