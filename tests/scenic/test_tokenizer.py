"""scenic's query tokenization: reference ids, padding, truncation and the lazy clip import."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from owlvit_cli.scenic.tokenizer import get_tokenizer, tokenize, tokenize_queries
from tests.helpers import REFERENCE, REFERENCE_NAMES

REFERENCES = tuple(sorted(REFERENCE_NAMES))
SOT, EOT = 49406, 49407


@pytest.mark.parametrize("name", REFERENCES)
def test_reproduces_reference_input_ids(name: str) -> None:
    manifest = json.loads((REFERENCE / "manifest.json").read_text())
    with np.load(REFERENCE / f"ref_{name}_io.npz", allow_pickle=False) as data:
        expected = data["input_ids"]
        stored = data["queries"].tolist()  # '' marks the padding slot there
    ids = tokenize_queries(manifest["queries"])
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, expected)
    from_npz = [[q if q else None for q in image] for image in stored]
    np.testing.assert_array_equal(tokenize_queries(from_npz), expected)


def test_empty_string_is_a_real_query() -> None:
    assert tokenize("") == [SOT, EOT] + [0] * 14


def test_lowercases() -> None:
    assert tokenize("Tree") == tokenize("tree") == tokenize("  TREE ")


def test_truncation_drops_eot() -> None:
    ids = tokenize("one two three four five six seven eight nine ten eleven twelve thirteen"
                   " fourteen fifteen sixteen")  # fmt: skip
    assert len(ids) == 16 and ids[0] == SOT
    assert EOT not in ids and 0 not in ids
    assert tokenize("a dog", max_len=3) == [SOT, 320, 1929]


def test_ragged_queries_and_none_are_zero_rows() -> None:
    ids = tokenize_queries([["cat"], [None, "dog", "bird"]])
    assert ids.shape == (2, 3, 16)
    np.testing.assert_array_equal(ids[0, 1:], 0)
    np.testing.assert_array_equal(ids[1, 0], 0)
    assert ids[0, 0].tolist() == tokenize("cat")
    assert ids[1, 2].tolist() == tokenize("bird")


def test_rejects_bare_strings() -> None:
    with pytest.raises(TypeError):
        tokenize_queries("cat")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tokenize_queries(["cat", "dog"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        tokenize(None)  # type: ignore[arg-type]


def test_tokenizer_is_cached() -> None:
    assert get_tokenizer() is get_tokenizer()


def test_import_is_quiet_and_does_not_load_torch() -> None:
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "from owlvit_cli.scenic.tokenizer import tokenize\n"
        "assert tokenize('a cat')[:4] == [49406, 320, 2368, 49407]\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
