"""The core's K-long kernels (lca_core.arrays): the array API's, checked against numpy
float64 on the host; the frameworks' own kernels are checked against these in their
suites (tests/torch/test_device.py, tests/jax/test_device.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lca_core import Layout
from lca_core.arrays import (
    Kernels,
    check_arithmetic,
    compensated_sum,
    joined,
    kernels,
    to_host,
    working_copy,
)
from lca_core.layout import sign_counts

values = arrays(
    np.float32,
    st.integers(1, 3000),
    elements=st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False),
)


@given(values)
def test_a_compensated_float32_sum_is_as_accurate_as_float64(x):
    """Its error is float64's on the same terms, not float32's growth with the length:
    within a few float32 roundings of the exact sum's size, far below n of them."""
    exact = math.fsum(x.astype(np.float64))
    got = float(joined(compensated_sum(x, wide=False)))
    scale = float(np.abs(x.astype(np.float64)).sum())
    assert abs(got - exact) <= 1e-12 * scale  # float64's rounding, not float32's


def test_a_plain_float32_sum_is_what_compensation_corrects():
    """The case the compensation exists for: many terms of one size, where float32's
    pairwise sum drifts measurably and the compensated one does not."""
    x = np.full(2**20 + 3, 0.1, dtype=np.float32)
    exact = math.fsum(x.astype(np.float64))
    naive = float(np.sum(x, dtype=np.float32))
    for wide in (False, True):  # TwoSum where float64 is missing, else a float64 sum
        assert abs(naive - exact) > 100 * abs(float(joined(compensated_sum(x, wide=wide))) - exact)


@given(st.lists(st.integers(0, 40), min_size=1, max_size=6), st.data())
def test_segment_sums_and_sign_counts_equal_numpy_per_span(sizes, data):
    bounds = (0, *np.cumsum(sizes).tolist())
    x = data.draw(arrays(np.float64, (2, bounds[-1]), elements=st.floats(-3, 3)))
    ops = Kernels()
    want = np.stack([x[:, a:b].sum(axis=-1) for a, b in itertools.pairwise(bounds)], -1)
    np.testing.assert_allclose(ops.segment_sums(x, bounds), want, atol=1e-12)
    counts = ops.sign_counts(x, bounds)
    for j, (a, b) in enumerate(itertools.pairwise(bounds)):
        assert counts[0, j].tolist() == [(x[0, a:b] < 0).sum(), (x[0, a:b] > 0).sum()]


@given(
    st.lists(st.tuples(st.floats(-2, 2), st.floats(-3, 3)), min_size=1, max_size=5),
    st.floats(0.1, 4),
)
def test_combine_is_the_weighted_sum_and_leaves_its_terms_alone(terms, scale):
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=7) for _ in terms]
    before = [x.copy() for x in xs]
    got = Kernels().combine([(x, w) for x, (w, _) in zip(xs, terms, strict=True)], scale)
    want = sum(x * w for x, (w, _) in zip(before, terms, strict=True)) * scale
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    for x, b in zip(xs, before, strict=True):
        np.testing.assert_array_equal(x, b)  # no term was written into


def test_a_non_contiguous_layout_is_reduced_by_layer_from_its_parameters_spans():
    """Layers whose parameters interleave: a device array is summed per parameter where
    it lies and grouped by layer on the host — tested here through Kernels on numpy, as
    a device array takes that path."""
    layout = Layout.from_list(
        [
            {"name": "a.w", "shape": [3], "dtype": "float32", "layer": "a"},
            {"name": "b.w", "shape": [2], "dtype": "float32", "layer": "b"},
            {"name": "a.b", "shape": [2], "dtype": "float32", "layer": "a"},
        ]
    )
    x = np.array([1.0, -2.0, 3.0, 4.0, -5.0, 6.0, -7.0])
    bounds, by_layer = layout._device_spans
    assert not by_layer
    sums = layout._by_layer_of_spans(Kernels().segment_sums(x, bounds))
    np.testing.assert_allclose(sums, layout.reduce_by_layer(x))
    counts = Kernels().sign_counts(x, bounds)
    helped = layout._by_layer_of_spans(counts[..., 0])
    np.testing.assert_array_equal(helped, sign_counts(x, layout)[:, 0])


def test_host_arrays_take_the_reference_path():
    x = np.arange(4.0)
    assert kernels(x) is kernels(np.zeros(1))
    assert working_copy(x) is x  # float64 already: not copied
    assert working_copy(x.astype(np.float32)).dtype == np.float64
    assert to_host(x, np.float32).dtype == np.float32


def test_arithmetic_is_resolved_or_refused_with_the_remedy():
    assert check_arithmetic("auto", device=True, backend="b") == "device"
    assert check_arithmetic("auto", device=False, backend="b") == "host"
    assert check_arithmetic("host", device=True, backend="b") == "host"
    with pytest.raises(ValueError, match="arithmetic='auto' or 'host'"):
        check_arithmetic("device", device=False, backend="TFBackend")
    with pytest.raises(ValueError, match="unknown arithmetic 'gpu'"):
        check_arithmetic("gpu", device=True, backend="b")
