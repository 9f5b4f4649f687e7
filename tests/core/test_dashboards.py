"""LCA in the dashboards (``log_to=``), alerts, and ``lca export``: through the core, against
the real TensorBoard, MLflow and W&B (offline) libraries."""

import logging

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lca_core import StepResult, open_run
from lca_core.dashboards import Alert, Alerts, Dashboard, EpochSums, Metrics, Sink
from lca_core.dashboards.alerts import AlertWatch
from lca_core.dashboards.export import run_metrics
from lca_core.tools.cli import main
from tests.core.models import HeavyBall, momentum_run
from tests.dashboards import (
    as_float32,
    assert_same,
    expected,
    mlflow_metrics,
    tensorboard_scalars,
    wandb_alerts,
    wandb_history,
)


def train(store=None, steps=6, opt=None, val=False, split=True, **options):
    """Momentum SGD tracked with ``options`` (split by its parts unless ``split=False``)."""
    opt = opt or HeavyBall(0.3, 0.9, wd=1e-2)
    return momentum_run(opt, store, steps, val=val, split=split, **options)[0]


#: a learning rate so high that a layer raises the loss at step 5 (an alert to see)
OVERSHOOTING = HeavyBall(1.0, 0.9)


class Recorded(Sink):
    """A sink that keeps what it is given."""

    def __init__(self):
        self.logged, self.alerts = [], []

    def log(self, step, metrics):
        self.logged.append((step, dict(metrics)))

    def alert(self, alert):
        self.alerts.append(alert)


def by_tag(logged):
    out = {}
    for step, metrics in logged:
        for tag, value in metrics.items():
            out.setdefault(tag, []).append((step, value))
    return out


def test_each_step_is_logged_under_the_tables_names_with_the_stored_values(tmp_path):
    logged = []
    results = train(
        tmp_path / "run", val=True, eval_subset=0.5, log_to=lambda s, m: logged.append((s, m))
    )
    assert [s for s, _ in logged] == [r.step + 1 for r in results] == list(range(1, 7))
    first = logged[0][1]
    r = results[0]
    layers = ("fc0", "fc1")
    assert set(first) == {
        "lca/loss_change", "lca/sum_lca", "lca/residual", "lca/budget_used", "lca/pct_helped",
        *(f"lca/{kind}/{layer}" for layer in layers for kind in (
            "layer", "layer_stderr", "val/layer", "gradient/layer", "momentum/layer",
            "weight_decay/layer",
        )),
    }  # fmt: skip
    assert first["lca/loss_change"] == r.loss_after - r.loss_before
    assert first["lca/residual"] == r.residual and first["lca/pct_helped"] == r.pct_helped
    assert first["lca/layer/fc1"] == r.layer_lca[1]
    assert first["lca/layer_stderr/fc0"] == r.layer_lca_stderr[0]
    assert first["lca/momentum/layer/fc1"] == r.part_layer_lca[1, 1]
    assert first["lca/val/layer/fc0"] == r.val_layer_lca[0]
    # live and stored agree, every step (the export reads the store)
    assert_same(by_tag(logged), expected(tmp_path / "run"))
    summary = open_run(tmp_path / "run").summary()
    assert logged[-1][1]["lca/budget_used"] == pytest.approx(summary.budget_used, rel=1e-12)


def test_log_every_thins_the_allocated_steps_at_their_optimizer_steps():
    sink = Recorded()
    train(steps=8, every=2, log_every=2, log_to=[sink])
    assert [s for s, _ in sink.logged] == [4, 8]


def _result(rng, step, layers=3, parts=False):
    counts = rng.integers(0, 50, (layers, 3))
    return StepResult(
        step=step,
        loss_before=float(rng.normal()),
        loss_after=float(rng.normal()),
        lca_array=np.zeros(1),
        residual=float(rng.normal()) * 1e-4,
        drift=0.0,
        panels=2,
        converged=True,
        gradient_passes=2,
        layer_lca=rng.normal(size=layers),
        layer_counts=counts,
        layer_lca_stderr=np.abs(rng.normal(size=layers)),
        part_layer_lca=rng.normal(size=(3, layers)) if parts else None,
    )


@given(st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_an_epochs_numbers_are_the_sums_of_its_steps(steps, seed):
    rng = np.random.default_rng(seed)
    metrics = Metrics(["a", "b/c", "d:e"], parts=("gradient", "momentum", "weight_decay"))
    epoch = EpochSums(metrics)
    results = [_result(rng, t, parts=True) for t in range(steps)]
    per_step = [metrics.of_step(r, 0.0) for r in results]
    for r in results:
        epoch.add(r)
    got = epoch.values(budget_used=0.25)
    assert set(got) == set(per_step[0])
    assert "lca/layer/d_e" in got  # a name no dashboard takes is made one
    for tag in set(got) - {"lca/budget_used", "lca/pct_helped"}:
        assert got[tag] == pytest.approx(sum(m[tag] for m in per_step), rel=1e-9, abs=1e-12)
    counts = np.sum([r.layer_counts for r in results], axis=0).sum(axis=0)
    assert got["lca/pct_helped"] == pytest.approx(100 * counts[0] / counts.sum())
    assert got["lca/budget_used"] == 0.25
    assert EpochSums(metrics).values(budget_used=0.25) == {}


def test_a_failing_dashboard_is_reported_once_and_costs_nothing_else(tmp_path, caplog):
    calls = []

    def broken(step, metrics):
        calls.append(step)
        if step >= 2:
            raise ConnectionError("the server went away")

    good = Recorded()
    with caplog.at_level(logging.WARNING, logger="lca"):
        results = train(tmp_path / "logged", log_to=[broken, good])
    assert calls == [1, 2]  # off after it failed
    assert [s for s, _ in good.logged] == list(range(1, 7))  # the others go on
    reports = [r for r in caplog.records if "ConnectionError" in r.getMessage()]
    assert len(reports) == 1 and "off for the rest of this run" in reports[0].getMessage()
    assert len(results) == 6
    train(tmp_path / "plain")
    logged, plain = open_run(tmp_path / "logged"), open_run(tmp_path / "plain")
    np.testing.assert_array_equal(logged.layer_lca, plain.layer_lca)
    np.testing.assert_array_equal(logged.losses, plain.losses)


def test_a_failing_on_alert_is_reported_once_and_alerts_go_on(caplog):
    def raising(alert):
        raise RuntimeError("pager down")

    sink = Recorded()
    dash = Dashboard(
        [sink], layers=["a"], budget=0.01, alerts=Alerts(hurting_steps=1), on_alert=raising
    )
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING, logger="lca"):
        for t in range(4):
            r = _result(rng, t, layers=1)
            r.layer_lca = np.array([1.0 if t % 2 == 0 else -1.0])  # hurts at 0 and 2
            dash.step(r, budget_used=0.0)
    assert [a.step for a in sink.alerts] == [1, 3]
    assert sum("pager down" in r.getMessage() for r in caplog.records) == 1
    assert sum("LCA alert" in r.getMessage() for r in caplog.records) == 2


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 6))
def test_a_hurting_streak_alerts_once_when_it_reaches_n_steps(hurts, n):
    watch = AlertWatch(Alerts(hurting_steps=n, unconverged_steps=None), ["a", "b"], 0.01)
    rng = np.random.default_rng(0)
    raised = []
    for t, hurt in enumerate(hurts):
        r = _result(rng, t, layers=2)
        r.layer_lca = np.array([1.0 if hurt else -1.0, -1.0])  # "b" always helps
        raised += watch.check(t + 1, r, 0.0, None)
    want, streak = [], 0
    for t, hurt in enumerate(hurts):
        streak = streak + 1 if hurt else 0
        if streak == n:
            want.append(t + 1)
    assert [a.step for a in raised] == want
    assert all(a.kind == "layer_hurting" and a.layer == "a" for a in raised)


def test_budget_unconverged_and_cost_alert_when_they_start_and_again_after_they_stop():
    rules = Alerts(hurting_steps=None, unconverged_steps=2, cost_ratio=10.0)
    watch = AlertWatch(rules, ["a"], budget=0.01)
    rng = np.random.default_rng(1)
    used = [0.001, 0.02, 0.03, 0.005, 0.02]
    converged = [True, False, False, False, True]
    cost = [None, 5.0, 12.0, 20.0, 3.0]
    kinds = []
    for t in range(5):
        r = _result(rng, t, layers=1)
        r.converged = converged[t]
        kinds.append(sorted(a.kind for a in watch.check(t + 1, r, used[t], cost[t])))
    assert kinds == [[], ["over_budget"], ["cost", "unconverged"], [], ["over_budget"]]
    assert (
        AlertWatch(Alerts(over_budget=False), ["a"], 0.01).check(
            1, _result(rng, 0, layers=1), 0.5, None
        )
        == []
    )


def test_alerts_false_raises_none_and_alert_events_reach_the_sinks():
    sink = Recorded()
    quiet = Dashboard([sink], layers=["a"], budget=0.01, alerts=False)
    rng = np.random.default_rng(2)
    r = _result(rng, 0, layers=1)
    assert quiet.step(r, budget_used=1.0) == [] and sink.alerts == []
    seen = []
    loud = Dashboard([sink], layers=["a"], budget=0.01, on_alert=seen.append)
    (alert,) = loud.step(r, budget_used=1.0)
    assert alert.kind == "over_budget" and seen == [alert] == sink.alerts
    assert isinstance(alert, Alert) and "budget" in alert.message


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"log_to": 42}, TypeError, "SummaryWriter"),
        ({"log_to": [print, "runs/"]}, TypeError, "str"),
        ({"log_every": 0}, ValueError, "log_every"),
        ({"alerts": "loud"}, TypeError, "Alerts"),
        ({"on_alert": "pager"}, TypeError, "on_alert"),
    ],
)
def test_bad_dashboard_options_are_refused_when_the_tracker_is_made(options, error, match):
    with pytest.raises(error, match=match):
        train(steps=0, **options)


def test_bad_alert_rules_are_refused():
    with pytest.raises(ValueError, match="hurting_steps"):
        Alerts(hurting_steps=0)
    with pytest.raises(ValueError, match="cost_ratio"):
        Alerts(cost_ratio=-1)


def test_replay_refuses_log_to_and_names_export(tmp_path):
    from lca_core import replay

    train(tmp_path / "rec", record_only=True, split=False)
    with pytest.raises(ValueError, match="lca export"):
        replay(tmp_path / "rec", None, log_to=print)


# -- the real dashboards ---------------------------------------------------------------------
def test_tensorboard_writer_and_export_hold_every_step(tmp_path):
    from tensorboard.summary import DirectoryOutput, Writer

    writer = Writer(DirectoryOutput(str(tmp_path / "live")))
    train(tmp_path / "run", val=True, eval_subset=0.5, log_to=writer)
    writer.close()
    want = as_float32(expected(tmp_path / "run"))
    assert_same(tensorboard_scalars(tmp_path / "live"), want)
    assert main(["export", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "after")]) == 0
    assert_same(tensorboard_scalars(tmp_path / "after"), want)


def test_mlflow_active_run_a_run_object_and_export_hold_every_step(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as active:
        train(tmp_path / "a", opt=OVERSHOOTING, log_to=mlflow, alerts=Alerts(hurting_steps=1))
    with mlflow.start_run() as run:
        pass  # logged to as an object, after it ended
    train(tmp_path / "b", log_to=run)
    client = mlflow.MlflowClient(uri)
    assert_same(mlflow_metrics(client, active.info.run_id), expected(tmp_path / "a"))
    assert_same(mlflow_metrics(client, run.info.run_id), expected(tmp_path / "b"))
    tags = client.get_run(active.info.run_id).data.tags
    assert "raised the loss" in tags["lca.alert.layer_hurting"]
    assert main(["export", str(tmp_path / "a"), "--mlflow", "--experiment", "exported"]) == 0
    (exported,) = client.search_runs([client.get_experiment_by_name("exported").experiment_id])
    assert_same(mlflow_metrics(client, exported.info.run_id), expected(tmp_path / "a"))


def test_wandb_offline_run_holds_every_step_and_the_alerts(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="lca-test", dir=str(tmp_path))
    run.log({"loss": 1.0})  # the user's own logging before and after
    train(tmp_path / "run", opt=OVERSHOOTING, log_to=run, alerts=Alerts(hurting_steps=1))
    run.log({"loss": 0.5})
    run.finish()
    assert_same(wandb_history(tmp_path), expected(tmp_path / "run"))
    assert any("raised the loss" in text for text in wandb_alerts(tmp_path))


def test_export_of_a_record_only_run_says_to_replay_first(tmp_path, capsys):
    train(tmp_path / "rec", record_only=True, split=False)
    assert main(["export", str(tmp_path / "rec"), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "replay" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "rec")]) == 2


def test_run_metrics_of_a_run_without_subsets_or_parts_has_only_its_groups(tmp_path):
    train(tmp_path / "run", opt=HeavyBall(0.3), steps=3)
    rows = list(run_metrics(open_run(tmp_path / "run")))
    assert [s for s, _ in rows] == [1, 2, 3]
    assert not any("stderr" in tag or "/val/" in tag for tag in rows[0][1])
