import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lca_core import (
    Allocator,
    FormatVersionError,
    FunctionBackend,
    Layout,
    LayoutMismatchError,
    NotARunError,
    ParamSpec,
    open_run,
)
from lca_core.backend_kit.numpy_models import MLP
from lca_core.storage.store import RunWriter, array_specs, committed_counts
from tests.core.models import digits_like, sgd

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
layouts = st.lists(st.tuples(shapes, st.integers(0, 2)), min_size=1, max_size=5).map(
    lambda items: Layout(
        tuple(
            ParamSpec(f"p{i}", shape, "float32", f"layer{layer}", 0 if shape else None)
            for i, (shape, layer) in enumerate(items)
        )
    )
)


def quadratic_backend(layout, seed=0):
    scale = np.random.default_rng(seed).uniform(0.5, 2.0, size=layout.size)
    return FunctionBackend(
        lambda th: (0.5 * scale @ th**2, scale * th), np.zeros(layout.size), layout=layout
    )


def one_step_run(path, layout, **options):
    """A run of one step from θ = 1 to θ = 0 of a quadratic loss."""
    alloc = Allocator(quadratic_backend(layout), path, **options)
    alloc.start(np.ones(layout.size))
    alloc.advance(np.zeros(layout.size))
    alloc.close()
    return path


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layouts, st.integers(1, 6), st.integers(0, 1000))
def test_store_round_trip(tmp_path_factory, layout, steps, seed):
    path = tmp_path_factory.mktemp("run") / "run"
    rng = np.random.default_rng(seed)
    traj = [rng.normal(size=layout.size).astype(np.float32) for _ in range(steps + 1)]
    alloc = Allocator(
        quadratic_backend(layout, seed),
        path,
        store_params=True,
        store_trajectory=True,
        store_grads=True,
        metadata={"seed": seed},
    )
    alloc.start(traj[0])
    results = [alloc.advance(t) for t in traj[1:]]
    summary = alloc.close()

    run = open_run(path)
    assert run.steps == steps and run.layout == layout
    assert run.layers == list(layout.layers)
    assert run.metadata["metadata"] == {"seed": seed}
    np.testing.assert_array_equal(run.losses[1:], [r.loss_after for r in results])
    np.testing.assert_array_equal(run.layer_lca, [r.layer_lca for r in results])
    np.testing.assert_array_equal(run.residuals, [r.residual for r in results])
    np.testing.assert_array_equal(run.panels, [r.panels for r in results])
    for p in layout.params:
        expected = np.stack([r.lca[layout.slice_of(p.name)] for r in results]).astype(np.float32)
        np.testing.assert_array_equal(run.param_lca(p.name), expected.reshape(steps, *p.shape))
    for t in range(steps + 1):
        np.testing.assert_array_equal(run.theta(t), traj[t])  # stored in the model's dtype
    assert run.theta(0).dtype == np.float32
    streamed = np.concatenate([block for _, block in run.iter_param_lca(chunk_steps=2)])
    np.testing.assert_array_equal(streamed, run.array("param_lca"))
    stored = run.summary().to_dict()
    live = summary.to_dict()
    assert stored.keys() == live.keys()
    for key, value in stored.items():
        if key == "layers":
            assert value == pytest.approx(live[key], rel=1e-12, abs=1e-15)
        elif value is None or isinstance(value, bool):
            assert value == live[key]
        else:
            assert value == pytest.approx(live[key], rel=1e-12, abs=1e-15, nan_ok=True)


def test_store_holds_no_pickles_only_numbers_and_json(tmp_path):
    layout = MLP((3, 2)).layout
    one_step_run(tmp_path / "run", layout, store_params=True)
    for root, _, files in os.walk(tmp_path / "run"):
        for name in files:
            if name == "zarr.json":
                meta = json.loads((Path(root) / name).read_text())
                assert meta.get("data_type", "float64") in {
                    "float64",
                    "float32",
                    "int64",
                    "int32",
                    "bool",
                }
                assert "pickle" not in json.dumps(meta).lower()


def test_a_run_killed_mid_write_reopens_whole_and_resumes(tmp_path):
    path = tmp_path / "run"
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(f"""
        import numpy as np
        import lca_core.storage.store
        lca_core.storage.store.MAX_CHUNK_STEPS = 4   # commit every 4 steps
        from lca_core import Allocator, FunctionBackend
        from lca_core.backend_kit.numpy_models import MLP
        from tests.core.models import digits_like, sgd
        x, y = digits_like(0)
        mlp = MLP((16, 8, 4))
        traj = sgd(mlp.loss_and_grad, mlp.init(0), 0.2, 10_000, x, y)
        alloc = Allocator(FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y),
                          layout=mlp.layout), {str(path)!r}, store_params=True)
        alloc.start(traj[0])
        for theta in traj[1:]:
            alloc.advance(theta)
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            with contextlib.suppress(NotARunError):  # not created yet
                if committed_counts(path).get("lca", 0) >= 12:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the writer did not commit 12 steps in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    run = open_run(path)
    steps = run.steps
    assert steps >= 12 and steps % 4 == 0  # whole chunks only
    assert len(run.losses) == steps + 1 and len(run.array("param_lca")) == steps
    # every committed row belongs to the same step as its neighbours: nothing half written
    np.testing.assert_allclose(
        np.diff(run.losses), run.layer_lca.sum(1) + run.residuals, atol=1e-12
    )
    np.testing.assert_allclose(
        run.array("param_lca").sum(1), run.layer_lca.sum(1), rtol=1e-4, atol=1e-6
    )

    x, y = digits_like(0)
    mlp = MLP((16, 8, 4))
    traj = sgd(mlp.loss_and_grad, mlp.init(0), 0.2, steps + 5, x, y)

    def backend():
        return FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)

    resumed = Allocator(backend(), path, store_params=True, resume=True)
    assert resumed.steps == steps
    resumed.start(traj[steps])
    for theta in traj[steps + 1 :]:
        resumed.advance(theta)
    summary = resumed.close()

    fresh = Allocator(backend(), tmp_path / "fresh", store_params=True)
    fresh.start(traj[0])
    for theta in traj[1:]:
        fresh.advance(theta)
    expected = fresh.close()
    run, ref = open_run(path), open_run(tmp_path / "fresh")
    assert run.steps == steps + 5
    np.testing.assert_allclose(run.losses, ref.losses, rtol=1e-12)
    np.testing.assert_allclose(run.layer_lca, ref.layer_lca, rtol=1e-9, atol=1e-15)
    assert summary.sum_lca == pytest.approx(expected.sum_lca, rel=1e-9)
    assert run.steps == summary.steps


def test_resume_refuses_a_different_model(tmp_path):
    layout = MLP((3, 2)).layout
    one_step_run(tmp_path / "run", layout)
    other = MLP((3, 3)).layout
    with pytest.raises(LayoutMismatchError, match="different parameter layout"):
        Allocator(quadratic_backend(other), tmp_path / "run", resume=True)


def test_an_existing_run_is_not_overwritten_by_accident(tmp_path):
    layout = MLP((3, 2)).layout
    one_step_run(tmp_path / "run", layout)
    with pytest.raises(FileExistsError, match="resume=True"):
        Allocator(quadratic_backend(layout), tmp_path / "run")
    assert open_run(tmp_path / "run").steps == 1


def test_opening_something_that_is_not_a_run(tmp_path):
    with pytest.raises(NotARunError, match="not an lca run"):
        open_run(tmp_path)
    import zarr

    zarr.open_group(str(tmp_path / "plain"), mode="w")
    with pytest.raises(NotARunError, match="not an lca run"):
        open_run(tmp_path / "plain")


def test_a_newer_format_is_refused_with_advice(tmp_path):
    layout = MLP((3, 2)).layout
    writer = RunWriter(tmp_path / "run", layout, array_specs(layout))
    writer.update_attrs(format_version=99)
    with pytest.raises(FormatVersionError, match="pip install -U"):
        open_run(tmp_path / "run")


def test_missing_optional_arrays_are_explained(tmp_path):
    layout = MLP((3, 2)).layout
    one_step_run(tmp_path / "run", layout)
    run = open_run(tmp_path / "run")
    with pytest.raises(KeyError, match=r"Record the run with store_params=True"):
        run.param_lca("fc0.weight")
    with pytest.raises(KeyError, match=r"per_class=True"):
        run.array("class_layer_lca")
    with pytest.raises(KeyError, match=r"val_data="):
        run.array("val_layer_lca")
    with pytest.raises(IndexError, match="not recorded"):
        run.theta(0)


def test_an_unknown_parameter_name_lists_the_names_the_run_has(run_path):
    run = open_run(run_path)
    with pytest.raises(KeyError, match=r"no parameter or layer named 'fc1.kernel'.*'fc1.weight'"):
        run.param_lca("fc1.kernel")
    assert run.param_lca("fc1").shape[1] == run.param_lca("fc1.weight")[0].size + 4
