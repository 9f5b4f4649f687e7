"""The API contract, tested once for every installed integration (function, torch,
Keras on TensorFlow, Keras on JAX, JAX): the same names and defaults, the same verbs, the
same results. Each tox environment runs it over the frameworks it installs."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import lca_core
from lca_core import (
    LCAError,
    NondeterministicLossError,
    Summary,
    UnknownOptionError,
    open_run,
    replay,
)
from lca_core.contract import OPTIONS
from tests.checks import assert_every_step_within_tol
from tests.contract.integrations import FunctionSession, init_weights, installed, problem
from tests.dashboards import assert_same, expected

INTEGRATIONS = installed()
IDS = [i.name for i in INTEGRATIONS]


@pytest.fixture(params=INTEGRATIONS, ids=IDS)
def integration(request):
    return request.param


def test_every_class_takes_the_contract_options_with_the_core_defaults(integration):
    for cls in integration.classes():
        params = inspect.signature(cls).parameters
        for name, default in OPTIONS.items():
            assert name in params, f"{cls.__module__}.{cls.__name__} lacks {name}"
            assert params[name].default == default, (cls, name)
        # evaluation data is `data` everywhere, never `eval_data`
        assert "eval_data" not in params
        assert "data" in params or cls.__module__ == "lca_core.tracker"


def test_unknown_option_is_refused_at_construction_naming_the_valid_ones(integration):
    session = integration.session()
    with pytest.raises(UnknownOptionError, match=r"'tols'.*Did you mean 'tol'.*max_panels"):
        session.tracker(tols=1e-3)
    for cls in integration.classes():
        if "Callback" in cls.__name__:
            with pytest.raises(UnknownOptionError, match="record_onyl"):
                cls(problem(), record_onyl=True)


def test_stochastic_loss_is_refused(integration):
    session = integration.session()
    tracker = session.tracker(stochastic=True)
    with pytest.raises(NondeterministicLossError, match="pure function"):
        session.train(tracker, 1)


def test_summary_is_one_type_also_for_record_only(integration, tmp_path):
    session = integration.session()
    tracker = session.tracker(tmp_path / "online")
    session.train(tracker, 2)
    summary = tracker.close()
    assert isinstance(summary, Summary) and summary.steps == 2
    assert summary == tracker.summary() and summary.gradient_passes == tracker.gradient_passes
    assert "budget used" in str(summary)
    recorder = session.tracker(tmp_path / "recorded", record_only=True)
    session.train(recorder, 3)
    recorded = recorder.close()
    assert isinstance(recorded, Summary)
    assert (recorded.steps, recorded.recorded_steps, recorded.gradient_passes) == (0, 3, 0)
    np.testing.assert_equal(open_run(tmp_path / "recorded").summary().to_dict(), recorded.to_dict())


def test_every_k_allocates_blocks_of_k_steps(integration, tmp_path):
    dense, sparse = integration.session(), integration.session()
    a = dense.tracker(tmp_path / "dense")
    dense.train(a, 6)
    a.close()
    b = sparse.tracker(tmp_path / "sparse", every=3)
    sparse.train(b, 6)
    b.close()
    d, s = open_run(tmp_path / "dense"), open_run(tmp_path / "sparse")
    assert s.steps == 2
    np.testing.assert_array_equal(s.step_index, [2, 5])
    np.testing.assert_allclose(s.losses, d.losses[[0, 3, 6]], rtol=1e-6)
    assert_every_step_within_tol(s)  # a block's allocation explains the block's loss change


def test_record_then_replay_equals_online(integration, tmp_path):
    online, recorded = integration.session(), integration.session()
    a = online.tracker(tmp_path / "online")
    online.train(a, 4)
    a.close()
    r = recorded.tracker(tmp_path / "recorded", record_only=True)
    recorded.train(r, 4)
    r.close()
    fresh = integration.session()
    summary = replay(tmp_path / "recorded", fresh.backend(), progress=False)
    assert summary.steps == 4
    x, y = open_run(tmp_path / "online"), open_run(tmp_path / "recorded")
    np.testing.assert_allclose(y.losses, x.losses, rtol=1e-6)
    np.testing.assert_allclose(y.layer_lca, x.layer_lca, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(y.step_index, x.step_index)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray (2 CPUs) whose workers unpickle the sessions' losses by value."""
    ray = pytest.importorskip("ray")
    cloudpickle = pytest.importorskip("cloudpickle")
    import tests.contract.integrations

    cloudpickle.register_pickle_by_value(tests.contract.integrations)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_replay_equals_the_sequential_replay(integration, tmp_path, local_ray):
    """The backend travels to Ray's workers (built again there) and allocates each range
    as this process does: the same losses and allocations, to float rounding."""
    session = integration.session()
    r = session.tracker(tmp_path / "recorded", record_only=True)
    session.train(r, 5)
    r.close()
    seq = replay(tmp_path / "recorded", session.backend(), out=tmp_path / "seq", progress=False)
    par = replay(
        tmp_path / "recorded",
        session.backend(),
        out=tmp_path / "ray",
        progress=False,
        executor="ray",
        workers=2,
    )
    a, b = open_run(tmp_path / "seq"), open_run(tmp_path / "ray")
    assert a.steps == b.steps == 5
    assert len(set(np.round(b.losses, 6))) == 6  # every point evaluated where it is
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-6)
    np.testing.assert_allclose(b.layer_lca, a.layer_lca, rtol=1e-5, atol=1e-8)
    assert par.budget_used == pytest.approx(seq.budget_used, rel=1e-3, abs=1e-9)
    assert par.unconverged_steps == seq.unconverged_steps


def test_resume_continues_the_run(integration, tmp_path):
    whole, split = integration.session(), integration.session()
    a = whole.tracker(tmp_path / "whole")
    whole.train(a, 4)
    a.close()
    b = split.tracker(tmp_path / "split")
    split.train(b, 2)
    b.close()
    c = split.tracker(tmp_path / "split", resume=True)
    split.train(c, 2)
    summary = c.close()
    x, y = open_run(tmp_path / "whole"), open_run(tmp_path / "split")
    assert y.steps == summary.steps == 4
    np.testing.assert_array_equal(y.step_index, x.step_index)
    np.testing.assert_allclose(y.losses, x.losses, rtol=1e-6)
    np.testing.assert_allclose(y.layer_lca, x.layer_lca, rtol=1e-5, atol=1e-8)


def test_per_class_allocations_sum_to_the_total(integration, tmp_path):
    session = integration.session()
    tracker = session.tracker(tmp_path / "run", per_class=True)
    session.train(tracker, 3)
    tracker.close()
    run = open_run(tmp_path / "run")
    class_layer = run.array("class_layer_lca")
    assert class_layer.shape == (3, 4, len(run.layers))
    np.testing.assert_allclose(class_layer.sum(1), run.layer_lca, atol=1e-9)
    np.testing.assert_allclose(run.array("class_losses").sum(1), run.losses, rtol=1e-9)


def test_validation_lca_comes_with_val_data(integration, tmp_path):
    session = integration.session()
    x, y = problem(seed=7)
    tracker = session.tracker(tmp_path / "run", val_data=(x[:50], y[:50]))
    session.train(tracker, 2)
    tracker.close()
    run = open_run(tmp_path / "run")
    assert run.array("val_layer_lca").shape == (2, len(run.layers))
    assert np.all(np.abs(run.array("val_residuals")) <= 1e-3)


def test_mean_and_per_example_losses_give_the_exact_same_allocation(integration, tmp_path):
    """Chunks of 48 over 120 examples: the last one is partial (padded where compiled shapes
    are fixed), so a mean that counted padding would miss the reference loss."""
    runs = []
    for convention in integration.session().conventions:
        session = integration.session()
        tracker = session.tracker(tmp_path / convention, convention=convention, batch_size=48)
        session.train(tracker, 3)
        tracker.close()
        runs.append(open_run(tmp_path / convention))
        assert runs[-1].losses[0] == pytest.approx(session.reference_loss, rel=1e-6)
    for run in runs[1:]:
        np.testing.assert_allclose(run.losses, runs[0].losses, rtol=1e-6)
        np.testing.assert_allclose(run.layer_lca, runs[0].layer_lca, rtol=1e-5, atol=1e-8)


def test_allocation_matches_a_finer_panel_oracle(integration, tmp_path):
    """Per layer, each step's LCA agrees with a 64-panel Simpson allocation of the same
    step within the tolerance: refinement stopped where it should, in every framework."""
    session = integration.session()
    tracker = session.tracker(tmp_path / "run", store_trajectory=True)
    session.train(tracker, 3)
    tracker.close()
    run = open_run(tmp_path / "run")
    backend = integration.session().backend()
    for t in range(run.steps):
        oracle = lca_core.allocate(
            backend, run.theta(t), run.theta(t + 1), tol=1e-12, max_panels=64, progress=False
        )
        assert oracle.result.panels == 64
        error = run.layer_lca[t] - oracle.result.layer_lca
        assert np.all(np.abs(error) <= 1e-3), error


def _bad(case: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = problem()
    x, y = x.copy(), y.copy()
    if case == "labels":
        y[7] = y.max() + 5  # a class the model does not have
    elif case == "nan":
        x[3, 0] = np.nan
    elif case == "shape":
        x = x[:, :-1]
    elif case == "length":
        y = y[:-1]
    return x, y


BAD_DATA = {
    "labels": r"labels|classes",
    "nan": r"NaN or infinite.*index 3|NaN or infinite",
    "shape": r"cannot take|does not fit",
    "length": r"inputs but \d+ targets",
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_evaluation_data_is_named_and_the_run_is_kept(integration, tmp_path, case):
    """Each mistake in the data is an lca error saying what is wrong, raised before any
    allocation, and a run written before it reopens unchanged."""
    session = integration.session()
    tracker = session.tracker(tmp_path / "run")
    session.train(tracker, 2)
    tracker.close()
    before = open_run(tmp_path / "run")
    losses, layer_lca = before.losses.copy(), before.layer_lca.copy()
    with pytest.raises(LCAError, match=BAD_DATA[case]):
        tracker = session.tracker(tmp_path / "run", data=_bad(case), resume=True)
        session.train(tracker, 1)
    after = open_run(tmp_path / "run")
    np.testing.assert_array_equal(after.losses, losses)
    np.testing.assert_array_equal(after.layer_lca, layer_lca)


def test_eval_subset_gives_error_bars_in_every_framework(integration, tmp_path):
    session = integration.session()
    tracker = session.tracker(tmp_path / "run", eval_subset=0.5)
    session.train(tracker, 3)
    tracker.close()
    run = open_run(tmp_path / "run")
    subset = run.config["eval_subset"]
    n = len(problem()[1])  # half the set, in 16 groups of equal size
    assert subset["size"] == n // 2 - n // 2 % 16 and subset["of"] == n
    assert run.layer_lca_stderr.shape == run.layer_lca.shape
    assert np.all(run.layer_lca_stderr > 0) and np.all(np.isfinite(run.layer_lca_stderr))
    assert_every_step_within_tol(run)  # Σ A = ΔL on the subset, as on any set


@pytest.mark.parametrize("design", [True, "paired"], ids=["shared", "paired"])
def test_resampled_subsets_allocate_alike_in_every_integration(integration, design, tmp_path):
    """A fresh subset at every point, drawn by the point's index: every framework draws
    the same subsets and allocates the same steps, errors and run check as numpy."""
    k0, b0, k1, b1 = init_weights()
    runs = {}
    for name, session in (("numpy", FunctionSession()), ("here", integration.session())):
        if isinstance(session, FunctionSession):  # from the weights the others start from
            session.theta = np.concatenate([k0.T.ravel(), b0, k1.T.ravel(), b1]).astype(float)
        tracker = session.tracker(
            tmp_path / name, eval_subset=32, resample=design, val_data=problem(3)
        )
        session.train(tracker, 4)
        tracker.close()
        runs[name] = open_run(tmp_path / name)
    here, numpy = runs["here"], runs["numpy"]
    assert here.design == ("shared" if design is True else "paired")
    for name in ("layer_lca", "layer_lca_stderr", "lca_stderr", "val_layer_lca", "losses"):
        np.testing.assert_allclose(here.array(name), numpy.array(name), rtol=2e-3, atol=2e-6)
    check, reference = here.summary().run_check, numpy.summary().run_check
    assert check is not None and check.consistent
    assert check.loss_change == pytest.approx(reference.loss_change, rel=1e-4)
    assert check.stderr == pytest.approx(reference.stderr, rel=2e-3)
    assert here.summary().gradient_passes == numpy.summary().gradient_passes
    if design is True:
        np.testing.assert_allclose(
            here.array("lca_cov_prev"), numpy.array("lca_cov_prev"), rtol=5e-3, atol=1e-9
        )
    else:  # Σ A = ΔL on each step's own subset (its start's loss is not the one stored)
        assert np.all(np.abs(here.residuals) <= 1e-3) and here.converged.all()


#: the ways a set is evaluated that the device arithmetic must give as the host does
ARITHMETIC_CASES = {
    "held": {},
    "validation": {"val_data": problem(seed=3)},
    "per_class": {"per_class": True},
    "subset": {"eval_subset": 0.5},
    "streamed": {"batch_size": 48},
}


@pytest.mark.parametrize("case", sorted(ARITHMETIC_CASES))
def test_device_arithmetic_allocates_as_the_host_reference(integration, case, tmp_path):
    """θ, Δ, the quadrature's sums and A in the framework's own arrays (the default where
    the backend can), against numpy float64 on the host: the same steps, per layer, per
    class, on a subset and for the validation set, held or streamed. A backend that
    computes on the host says so in its policy and refuses "device"."""
    if case == "streamed" and not integration.session().streams:
        pytest.skip("the function backend hands its whole set to the user's function")
    runs = {}
    for arithmetic in ("auto", "host"):
        session = integration.session()
        options = {**ARITHMETIC_CASES[case], "arithmetic": arithmetic}
        make = session.streamed_tracker if case == "streamed" else session.tracker
        tracker = make(tmp_path / arithmetic, **options)
        session.train(tracker, 3)
        tracker.close()
        runs[arithmetic] = open_run(tmp_path / arithmetic)
    device, host = runs["auto"], runs["host"]
    expected = "device" if integration.session().device_arithmetic else "host"
    assert device.metadata["policy"]["arithmetic"] == expected
    assert host.metadata["policy"]["arithmetic"] == "host"
    np.testing.assert_allclose(device.losses, host.losses, rtol=1e-7)
    np.testing.assert_allclose(device.residuals, host.residuals, atol=1e-7)
    names = {"layer_lca", "class_layer_lca", "val_layer_lca", "layer_lca_stderr"}
    for name in sorted(n for n in names if host.has(n)):
        want = host.array(name)
        atol = 1e-6 * np.abs(want).max()  # float32 device sums (JAX): ~1e-7 measured
        np.testing.assert_allclose(device.array(name), want, rtol=0, atol=atol, err_msg=name)
    np.testing.assert_array_equal(device.array("layer_counts"), host.array("layer_counts"))
    if not integration.session().device_arithmetic:
        with pytest.raises(ValueError, match="arithmetic='auto' or 'host'"):
            integration.session().tracker(arithmetic="device")


STREAMING = [i for i in INTEGRATIONS if i.session().streams]

if STREAMING:  # the function backend alone (tox env core) has nothing to stream

    @pytest.mark.parametrize("integration", STREAMING, ids=[i.name for i in STREAMING])
    @pytest.mark.parametrize("per_class", [False, True], ids=["whole", "per_class"])
    def test_a_set_larger_than_resident_bytes_is_streamed_to_the_same_allocation(
        integration, per_class, tmp_path
    ):
        """Streamed block by block (chunks of 48 over 120 examples: a partial last chunk) or
        held on the device: the same allocation. Torch cannot stream per-class yet: it says so."""
        held, streamed = integration.session(), integration.session()
        a = held.tracker(tmp_path / "held", batch_size=48, per_class=per_class)
        held.train(a, 3)
        a.close()
        b = streamed.streamed_tracker(tmp_path / "streamed", batch_size=48, per_class=per_class)
        assert b.backend.policy()["streamed"] and not a.backend.policy()["streamed"]
        if per_class and integration.name == "torch":
            with pytest.raises(ValueError, match="streamed"):
                streamed.train(b, 3)
            return
        streamed.train(b, 3)
        b.close()
        one, two = open_run(tmp_path / "held"), open_run(tmp_path / "streamed")
        np.testing.assert_allclose(two.losses, one.losses, rtol=1e-6)
        np.testing.assert_allclose(two.layer_lca, one.layer_lca, rtol=1e-5, atol=1e-9)
        np.testing.assert_array_equal(two.panels, one.panels)
        if per_class:
            np.testing.assert_allclose(
                two.array("class_layer_lca"), one.array("class_layer_lca"), rtol=1e-5, atol=1e-9
            )


def test_bfloat16_parameters_are_tracked_and_stored_exactly(integration, tmp_path):
    """bfloat16, as GPUs train, which numpy lacks: θ is held as float32 (which holds it
    exactly), every step is allocated, and the stored trajectory is the model's own."""
    if "bfloat16" not in integration.session.dtypes:
        pytest.skip(f"{integration.name} has no bfloat16 (numpy)")
    session = integration.session("bfloat16")
    tracker = session.tracker(tmp_path / "run", store_trajectory=True)
    session.train(tracker, 3)
    tracker.close()
    run = open_run(tmp_path / "run")
    assert run.steps == 3 and run.theta(3).dtype == np.float32
    np.testing.assert_array_equal(run.theta(3), session.flat_params())
    assert not np.array_equal(run.theta(3), run.theta(0))
    # the losses (~0.3–1.4) move by 0.16–1.0 a step; the allocations account for them within
    # the model's own precision: a bfloat16 loss near 1 is rounded to 2⁻⁸, so ΔL to 2⁻⁷
    assert np.all(np.abs(np.diff(run.losses)) > 0.1)
    assert np.all(np.abs(run.residuals) <= 2**-6)


def test_optimizer_splits_momentum_sgd_the_same_in_every_integration(integration, tmp_path):
    """The same momentum SGD in every framework: the same parts, against numpy's."""
    k0, b0, k1, b1 = init_weights()
    runs = {}
    for name, session in (("numpy", FunctionSession()), ("here", integration.session())):
        if isinstance(session, FunctionSession):  # from the weights the others start from
            session.theta = np.concatenate([k0.T.ravel(), b0, k1.T.ravel(), b1]).astype(float)
        optimizer = session.use_momentum(0.9)
        session.train(session.tracker(), 1)  # a carried momentum from the first step on
        tracker = session.tracker(tmp_path / name, optimizer=optimizer)
        session.train(tracker, 3)
        tracker.close()
        runs[name] = open_run(tmp_path / name)
    here, numpy = runs["here"], runs["numpy"]
    assert here.parts == list(lca_core.PARTS)
    np.testing.assert_allclose(here.part_layer_lca.sum(axis=1), here.layer_lca, atol=1e-12)
    np.testing.assert_allclose(here.part_layer_lca, numpy.part_layer_lca, rtol=2e-3, atol=2e-6)
    assert np.abs(here.part_layer_lca[:, 1]).min() > 0  # momentum carried at every step
    assert not here.part_layer_lca[:, 2].any()  # no weight decay


def test_optimizer_true_is_for_callbacks_only(integration):
    with pytest.raises(TypeError, match="fit callbacks"):
        integration.session().tracker(optimizer=True)


def test_log_to_gets_the_stored_numbers_under_the_same_names_in_every_integration(
    integration, tmp_path
):
    session, logged = integration.session(), []
    tracker = session.tracker(
        tmp_path / "run",
        every=2,
        log_every=2,
        val_data=problem(3),
        log_to=lambda step, metrics: logged.append((step, metrics)),
    )
    session.train(tracker, 8)
    tracker.close()
    assert [step for step, _ in logged] == [4, 8]  # optimizer steps: every 2nd block of 2
    stored = {tag: points[1::2] for tag, points in expected(tmp_path / "run").items()}
    got = {tag: [(s, m[tag]) for s, m in logged] for tag in logged[0][1]}
    assert_same(got, stored)
    assert {"lca/layer/" + layer for layer in open_run(tmp_path / "run").layers} < set(got)
    assert any(tag.startswith("lca/val/layer/") for tag in got)
