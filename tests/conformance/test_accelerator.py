"""Every framework on its accelerator (CUDA, JAX's GPU, TensorFlow's GPU): the evaluation
set is held on the device and the allocation is the one the CPU gives (tox env `all`).

Skipped where a framework sees no accelerator; under ``LCA_TEST_ACCELERATOR=cpu`` (tox env
`all`) the CPU stands in for one there, which checks these tests themselves: there they
compare the CPU with itself, and only a GPU makes them a test of the device paths.
"""

import importlib.util

import pytest

from lca_core.tools.conformance import compare, reference_problem, run_adapter
from tests.conformance.adapters import FRAMEWORK_ADAPTERS, cpu_and_accelerator

FRAMEWORKS = [f for f in FRAMEWORK_ADAPTERS if importlib.util.find_spec(f) is not None]
#: several chunks per pass, so that the sums across chunks (float64) are part of the test
CHUNK = 32


@pytest.mark.parametrize("per_class", [False, True], ids=["whole", "per_class"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_accelerator_holds_the_set_and_gives_the_cpus_allocation(
    framework, kind, per_class, tmp_path
):
    """Also by class (the grouped passes, whose parts sum to the whole); the accelerator's
    run with lca's arithmetic on it (θ, Δ, the sums and A as device arrays)."""
    cpu, accelerator = cpu_and_accelerator(framework)
    if accelerator is None:
        pytest.skip(f"{framework} sees no accelerator (LCA_TEST_ACCELERATOR=cpu: a stand-in)")
    problem = reference_problem(kind)
    outcomes = []
    # the CPU's on the host (the numpy reference), the accelerator's where its gradients are
    for place, name, arithmetic in ((cpu, "cpu", "host"), (accelerator, "accelerator", "device")):
        with place.scope():
            adapter = place.adapter(problem, batch_size=CHUNK)
            outcomes.append(
                run_adapter(
                    adapter,
                    problem,
                    tmp_path / name,
                    per_class=per_class,
                    arithmetic=arithmetic,
                )
            )
            assert place.held_on(adapter.backend) == {place.kind}, place.name
    problems = compare(*outcomes)
    assert problems == [], f"{accelerator.name} vs {cpu.name}: {problems}"
