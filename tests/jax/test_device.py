"""lca's arithmetic on JAX arrays (``arithmetic="device"``, the default in one process):
a tracked step moves nothing from the host to the device once the set is there, and its
compiled kernels give what the array-API kernels give on numpy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from lca_jax import Tracker
from lca_jax.kernels import KERNELS

from lca_core.arrays import Kernels, kernels
from tests.jax.conftest import init_mlp, mlp_loss


def _steps(digits, arithmetic: str, guard: bool, steps: int = 3, **options):
    x, y = (jnp.asarray(a) for a in digits)
    params, opt = init_mlp(), optax.sgd(0.2, momentum=0.9)
    state = opt.init(params)
    grad = jax.jit(jax.grad(lambda p, xb, yb: mlp_loss(p, xb, yb).mean()))
    tracker = Tracker(mlp_loss, params, (x, y), arithmetic=arithmetic, **options)
    tracker.start(params)  # the set goes to the device here
    results = []
    for step in range(steps):
        xb, yb = x[step * 64 : (step + 1) * 64], y[step * 64 : (step + 1) * 64]
        updates, state = opt.update(grad(params, xb, yb), state, params)
        new = optax.apply_updates(params, updates)
        if guard:
            with jax.transfer_guard_host_to_device("disallow"):
                results.append(tracker.update(params, new))
        else:
            results.append(tracker.update(params, new))
        params = new
    tracker.close()
    return results


@pytest.mark.parametrize(
    "options",
    [{}, {"per_class": True}, {"eval_subset": 320}, {"rule": "auto"}],
    ids=["whole", "per_class", "subset", "auto"],
)
def test_a_tracked_step_moves_nothing_to_the_device(digits, options):
    """Under transfer_guard_host_to_device("disallow") the device path's steps run (the
    host path's cannot: its nodes are host arrays) and equal the host path's."""
    device = _steps(digits, "device", guard=True, **options)
    with pytest.raises(Exception, match=r"[Dd]isallowed host-to-device transfer"):
        _steps(digits, "host", guard=True, **options)
    host = _steps(digits, "host", guard=False, **options)
    for a, b in zip(device, host, strict=True):
        assert isinstance(a.lca_array, jax.Array) and a.lca_array.dtype == jnp.float32
        scale = np.abs(b.layer_lca).max()
        np.testing.assert_allclose(a.layer_lca, b.layer_lca, rtol=0, atol=1e-6 * scale)
        assert a.residual == pytest.approx(b.residual, abs=1e-8)
        np.testing.assert_array_equal(a.layer_counts, b.layer_counts)


#: XLA flushes float32 subnormals to zero: an A_i under 1.2e-38 counts as zero there
finite32 = st.floats(
    -1e3, 1e3, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False
)


@settings(max_examples=25)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=5), st.data())
def test_the_compiled_kernels_give_the_array_api_kernels_results(sizes, data):
    bounds = (0, *np.cumsum(sizes).tolist())
    host = data.draw(arrays(np.float32, (2, bounds[-1]), elements=finite32))
    x = jnp.asarray(host)
    assert kernels(x) is KERNELS
    reference = Kernels()
    wide = host.astype(np.float64)
    np.testing.assert_allclose(
        KERNELS.segment_sums(x, bounds), reference.segment_sums(wide, bounds), atol=1e-9
    )
    np.testing.assert_array_equal(
        KERNELS.sign_counts(x, bounds), reference.sign_counts(wide, bounds)
    )
    assert KERNELS.total(x) == pytest.approx(math.fsum(wide.ravel()), abs=1e-9)
    a, b = x[0], x[1]
    np.testing.assert_allclose(
        KERNELS.node(a, 0.25, b), reference.node(host[0], 0.25, host[1]), rtol=1e-6, atol=1e-4
    )
    combined = KERNELS.combine([(a, 0.5), (b, 2.0)], 0.25)
    np.testing.assert_allclose(
        combined, reference.combine([(host[0], 0.5), (host[1], 2.0)], 0.25), rtol=1e-6, atol=1e-4
    )
    assert KERNELS.all_finite(x) and not KERNELS.all_finite(x.at[0, 0].set(jnp.nan))
    assert [r.shape for r in KERNELS.rows(x)] == [(bounds[-1],)] * 2


def test_the_compiled_sum_keeps_float64_accuracy_in_float32():
    """XLA keeps the compensation (it does not simplify (a + b) − a to b)."""
    x = jnp.full(2**20 + 3, 0.1, dtype=jnp.float32)
    exact = math.fsum(np.asarray(x, np.float64))
    compensated, plain = abs(KERNELS.total(x) - exact), abs(float(jnp.sum(x)) - exact)
    assert compensated < 1e-12 * exact and plain > 1e-8 * exact  # float32's, corrected
