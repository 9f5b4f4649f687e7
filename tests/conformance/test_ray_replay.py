"""Replay on Ray (a local ``ray.init(num_cpus=2)``): the run a sequential replay writes, with
the steps computed by Ray tasks in ranges; a task whose worker dies is retried."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import lca_core.parallel
from lca_core import FunctionBackend, open_run, replay
from lca_core.backend_kit.numpy_models import MLP
from lca_core.parallel import MAX_RANGE, ranges
from lca_core.tools.cli import main

ray = pytest.importorskip("ray")
cloudpickle = pytest.importorskip("cloudpickle")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/

STEPS = 9


def _parts() -> tuple:
    rng = np.random.default_rng(0)
    mlp = MLP((6, 8, 3), activation="tanh")
    data = (rng.normal(size=(120, 6)), rng.integers(0, 3, 120))
    return mlp.loss_and_grad, mlp.init(), data, mlp.layout


def _backend() -> FunctionBackend:
    loss_and_grad, theta0, data, layout = _parts()
    return FunctionBackend(loss_and_grad, theta0, data=data, layout=layout)


class _DiesOnce(FunctionBackend):
    """Kills the Ray worker that first evaluates with it (the driver's process, whose pid it
    is given, is spared; a worker builds the backend again from these arguments)."""

    def __init__(self, marker: Path, driver: int, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marker, self.driver = str(marker), driver

    def evaluate_split(self, thetas, state, split, per_class):
        if os.getpid() != self.driver and not os.path.exists(self.marker):
            Path(self.marker).write_text("died")
            os._exit(1)
        return super().evaluate_split(thetas, state, split, per_class)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A record-only run of 9 SGD steps."""
    from lca_core import Allocator

    path = tmp_path_factory.mktemp("ray") / "rec"
    loss_and_grad, theta, data, _ = _parts()
    alloc = Allocator(_backend(), path, record_only=True)
    alloc.start(theta)
    for _ in range(STEPS):
        _, grad = loss_and_grad(theta, *data)
        theta = theta - 0.5 * grad
        alloc.advance(theta)
    alloc.close()
    return path


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _same_runs(a: Path, b: Path) -> None:
    ra, rb = open_run(a), open_run(b)
    assert ra.steps == rb.steps == STEPS
    for name in ("losses", "layer_lca", "residuals", "panels", "param_lca", "layer_counts"):
        np.testing.assert_allclose(ra.array(name), rb.array(name), rtol=1e-12, err_msg=name)
    # the same allocation; each range re-evaluates its first point, so Ray makes more passes
    sa, sb = ra.summary(), rb.summary()
    assert replace(sb, gradient_passes=sa.gradient_passes) == sa
    assert sb.gradient_passes > sa.gradient_passes


def _sequential_and_ray(recorded: Path, tmp_path: Path, backend, workers: int) -> None:
    """Replay in this process and on Ray (with ``backend``): the same run."""
    replay(recorded, _backend(), out=tmp_path / "seq", store_params=True, progress=False)
    replay(
        recorded,
        backend,
        out=tmp_path / "ray",
        store_params=True,
        progress=False,
        executor="ray",
        workers=workers,
    )
    _same_runs(tmp_path / "seq", tmp_path / "ray")


@pytest.mark.parametrize(
    "workers,max_range", [(2, MAX_RANGE), (1, 2)], ids=["all-in-flight", "5-ranges-2-in-flight"]
)
def test_ray_replay_writes_the_run_a_sequential_replay_writes(
    recorded, tmp_path, monkeypatch, workers, max_range
):
    monkeypatch.setattr(lca_core.parallel, "MAX_RANGE", max_range)
    _sequential_and_ray(recorded, tmp_path, _backend(), workers)


def test_a_task_whose_worker_dies_is_retried(recorded, tmp_path):
    loss_and_grad, theta0, data, layout = _parts()
    dying = _DiesOnce(
        tmp_path / "died", os.getpid(), loss_and_grad, theta0, data=data, layout=layout
    )
    _sequential_and_ray(recorded, tmp_path, dying, workers=2)
    assert (tmp_path / "died").read_text() == "died"  # a worker did die


def test_the_cli_replays_on_ray(recorded, tmp_path, capsys):
    setup = tmp_path / "setup.py"
    setup.write_text(
        "import numpy as np\n"
        "from lca_core import FunctionBackend\n"
        "from lca_core.backend_kit.numpy_models import MLP\n"
        "def setup():\n"
        "    rng = np.random.default_rng(0)\n"
        "    x, y = rng.normal(size=(120, 6)), rng.integers(0, 3, 120)\n"
        "    mlp = MLP((6, 8, 3), activation='tanh')\n"
        "    return FunctionBackend(\n"
        "        mlp.loss_and_grad, mlp.init(), data=(x, y), layout=mlp.layout\n"
        "    )\n"
    )
    replay(recorded, _backend(), out=tmp_path / "seq", progress=False)
    argv = ["replay", str(recorded), "--backend", "function", "--setup", str(setup)]
    assert main([*argv, "--out", str(tmp_path / "cli"), "--ray", "--workers", "2"]) == 0
    assert "budget used" in capsys.readouterr().out
    np.testing.assert_allclose(
        open_run(tmp_path / "cli").layer_lca, open_run(tmp_path / "seq").layer_lca, rtol=1e-12
    )


@pytest.mark.parametrize(
    "first,last,workers", [(0, 9, 2), (3, 9, 2), (0, 1, 4), (0, 100, 3), (0, 1000, 2)]
)
def test_ranges_cover_every_step_once_in_order(first, last, workers):
    spans = ranges(first, last, workers)
    assert spans[0][0] == first and spans[-1][1] == last
    assert all(0 < b - a <= MAX_RANGE for a, b in spans)
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    assert len(spans) <= max(2 * workers, -(-(last - first) // MAX_RANGE))
