"""The Flax model's blockwise attention is flax's attention, to the bit, in fewer bytes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen.attention import dot_product_attention

from owlvit_cli.scenic.attention import blockwise_attention, query_blocks
from owlvit_cli.scenic.flax_model import FlaxRunner  # noqa: F401  (the CPU backend's settings)


def qkv(length: int, heads: int = 3, depth: int = 8, batch: int = 2) -> list[jax.Array]:
    rng = np.random.default_rng(length)
    shape = (batch, length, heads, depth)
    return [jnp.asarray(3 * rng.standard_normal(shape, np.float32)) for _ in range(3)]


@pytest.mark.parametrize("length", [1, 7, 50, 197])
@pytest.mark.parametrize("block_bytes", [4, 1 << 10, 1 << 30])
def test_blockwise_attention_is_flax_attention_bit_for_bit(length: int, block_bytes: int) -> None:
    # Blocks of 1 row, a few rows (the last one padded), and the whole head at once.
    q, k, v = qkv(length)
    attention = functools.partial(blockwise_attention, block_bytes=block_bytes)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(jax.jit(attention)(q, k, v))
        flax = np.asarray(jax.jit(dot_product_attention)(q, k, v))
    assert ours.shape == flax.shape == (2, length, 3, 8)
    np.testing.assert_array_equal(ours, flax)


def test_masked_attention_is_left_to_flax() -> None:
    q, k, v = qkv(16)
    causal = jnp.tril(jnp.ones((16, 16), bool))[None, None]
    ours = np.asarray(blockwise_attention(q, k, v, mask=causal))
    np.testing.assert_array_equal(ours, np.asarray(dot_product_attention(q, k, v, mask=causal)))
    unmasked = np.asarray(dot_product_attention(q, k, v))
    assert not np.allclose(ours, unmasked)  # the mask was applied, not dropped


@pytest.mark.parametrize("length", [1, 2, 577, 3601, 5185])
def test_query_blocks_cover_every_row_within_the_budget(length: int) -> None:
    budget = 1 << 20
    count, rows = query_blocks(length, budget)
    assert count * rows >= length > (count - 1) * rows  # every row, and no empty block
    assert rows * length * 4 <= budget or rows == 1


def test_released_sizes_split_as_documented() -> None:
    assert query_blocks(3601) == (1, 3601)  # B/16 at 960 px: one head is one block
    assert query_blocks(5185)[0] == 2  # L/14 at 1008 px: two blocks a head
