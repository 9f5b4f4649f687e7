import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lca_core import Layout, ParamSpec
from lca_core.layout import common_dtype, sign_counts

params = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=7)


def layout_of(items: list[tuple[int, int]]) -> Layout:
    """One parameter per (size, layer) item: layers interleaved, parameters empty, as drawn
    (one more parameter where all are empty: a layout holds something)."""
    if sum(size for size, _ in items) == 0:
        items = [*items, (1, 0)]
    return Layout(
        tuple(
            ParamSpec(f"p{i}", (size,), "float32", f"l{layer}", 0)
            for i, (size, layer) in enumerate(items)
        )
    )


def columns(layout: Layout, layer: str) -> np.ndarray:
    """The coordinates of θ that belong to ``layer``."""
    return np.concatenate(
        [np.arange(layout.size)[layout.slice_of(p.name)] for p in layout.layer_params(layer)]
    )


@given(params, st.integers(0, 10**6))
def test_layer_and_parameter_sums_match_a_naive_sum(items, seed):
    """Interleaved layers, empty parameters: both reduction paths give plain sums."""
    layout = layout_of(items)
    values = np.random.default_rng(seed).normal(size=(2, layout.size))
    by_layer = layout.reduce_by_layer(values)
    for j, name in enumerate(layout.layers):
        cols = columns(layout, name)
        np.testing.assert_allclose(by_layer[:, j], values[:, cols].sum(axis=1), atol=1e-12)
    np.testing.assert_allclose(
        layout.reduce_by_param(values).sum(axis=1), values.sum(axis=1), atol=1e-12
    )


@given(params, st.integers(0, 10**6))
def test_sign_counts_match_a_naive_count_in_every_layer(items, seed):
    """Counted span by span for one step, by reduction for several steps or interleaved
    layers: the same counts, which add up to each layer's size."""
    layout = layout_of(items)
    rng = np.random.default_rng(seed)
    lca = rng.normal(size=(3, layout.size)) * (rng.random((3, layout.size)) < 0.7)
    several = sign_counts(lca, layout)
    for t in range(len(lca)):
        one = sign_counts(lca[t], layout)
        np.testing.assert_array_equal(one, several[t])
        for j, name in enumerate(layout.layers):
            cols = columns(layout, name)
            values = lca[t, cols]
            expected = [(values < 0).sum(), (values > 0).sum(), (values == 0).sum()]
            np.testing.assert_array_equal(one[j], expected)


@pytest.mark.parametrize(
    ("dtypes", "held"),
    [
        (["float32"], "float32"),
        (["float16"], "float16"),
        ([np.float64], "float64"),
        (["bfloat16"], "float32"),  # numpy has no bfloat16: float32 holds it exactly
        (["float8_e4m3fn", "bfloat16"], "float32"),
        (["bfloat16", "float32"], "float32"),
        (["bfloat16", "float16"], "float64"),  # two formats: float64 holds both
    ],
)
def test_theta_is_held_in_a_dtype_numpy_has_that_holds_every_parameter_exactly(dtypes, held):
    assert common_dtype(dtypes) == np.dtype(held)
