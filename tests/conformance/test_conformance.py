"""Same trajectory, same allocations, in every installed backend (tox env `all`), with
the core's arithmetic on the host (numpy float64) and on each backend's own arrays."""

import os

import numpy as np
import pytest

from lca_core.tools.conformance import compare, reference_problem, run_adapter
from tests.conformance.adapters import installed_adapters


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def outcomes(request, tmp_path_factory):
    problem = reference_problem(request.param)
    adapters = installed_adapters(problem)
    expected = {"mlp": 4, "cnn": 3} if os.environ.get("LCA_TOX_ENV") == "all" else None
    if expected is not None:
        assert len(adapters) == expected[problem.kind], [a.name for a in adapters]
    if len(adapters) < 2:
        pytest.skip("conformance needs two backends; run the tox `all` env")
    root = tmp_path_factory.mktemp(problem.kind)
    return [
        run_adapter(a, problem, root / f"{a.name}-{arithmetic}", arithmetic=arithmetic)
        for a in adapters
        for arithmetic in ("host", "device")
    ]


def test_every_backend_agrees_with_every_other(outcomes):
    problems = [p for a in outcomes for b in outcomes if a.name < b.name for p in compare(a, b)]
    assert problems == []


def test_the_device_arithmetic_gives_the_host_references_allocation(outcomes):
    """Each backend's own arrays (torch tensors, JAX arrays: float32 vectors with
    float64-accurate sums; TensorFlow stays on the host) against its numpy float64 path,
    within a tenth of the cross-backend tolerances (docs/concepts.md: what was measured)."""
    host = {o.name: o for o in outcomes if not o.name.endswith("(device)")}
    for o in outcomes:
        if o.name.endswith("(device)"):
            reference = host[o.name.removesuffix(" (device)")]
            assert compare(reference, o, scale=0.1) == []


def test_the_allocation_is_real(outcomes):
    """Guard against agreeing on nothing: steps move the loss and LCA accounts for it."""
    for o in outcomes:
        change = np.diff(o.losses)
        assert np.all(np.abs(change) > 1e-4)
        # every step, from the stored per-parameter LCA alone (float32): within 1e-4
        np.testing.assert_allclose(o.lca.sum(axis=1), change, atol=1e-4)
        assert np.all(o.panels == 2)


def test_a_wrong_orientation_is_caught(outcomes):
    """The comparison is sharp: transposing one backend's kernels is a disagreement."""
    a = outcomes[0]
    broken = type(a)(**{**a.__dict__, "name": "broken", "lca": a.lca[:, ::-1]})
    assert any("per-parameter LCA differs" in p for p in compare(a, broken))
