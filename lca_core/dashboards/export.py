"""``lca export``: a recorded run's numbers into TensorBoard or MLflow after the fact, under
the names live logging uses (the steps of a run made without ``log_to``, or replayed)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..engine.summary import budget_used
from ..errors import LCAError
from ..layout import shares
from ..storage.run import Run
from .metrics import Metrics


def run_metrics(run: Run) -> Iterator[tuple[int, dict[str, float]]]:
    """(optimizer step, the step's numbers) for each allocated step of ``run``, as live
    logging gave them (``budget_used``: the run's up to that step)."""
    if not run.has("residuals"):
        raise LCAError(f"{run.path} is a record-only run: replay it, then export its steps")
    metrics = Metrics(run.layers, run.parts)
    losses, residuals, steps = run.losses, run.residuals, run.step_index
    optional = {
        name: run.array(name) if run.has(name) else None
        for name in ("layer_lca_stderr", "val_layer_lca", "part_layer_lca")
    }
    sums = np.cumsum(residuals)
    for t, (row, counts) in enumerate(zip(run.layer_lca, run.layer_counts, strict=True)):
        yield (
            int(steps[t]) + 1,
            metrics.values(
                loss_change=losses[t + 1] - losses[t],
                sum_lca=float(np.sum(row)),
                residual=residuals[t],
                budget_used=budget_used(float(sums[t]), losses[t + 1] - losses[0]),
                pct_helped=shares(counts)[0],
                layer_lca=row,
                **{name: None if arr is None else arr[t] for name, arr in optional.items()},
            ),
        )


def to_tensorboard(run: Run, directory: str | os.PathLike[str]) -> int:
    """Write ``run``'s steps as TensorBoard scalars in ``directory`` (a new event file
    beside any there); returns the steps written."""
    try:
        from tensorboard.summary import DirectoryOutput, Writer
    except ImportError as exc:
        raise LCAError(
            "lca export --tensorboard needs the tensorboard package: "
            "pip install 'loss-change-allocation[tensorboard]'"
        ) from exc
    Path(directory).mkdir(parents=True, exist_ok=True)
    writer = Writer(DirectoryOutput(os.fspath(directory)))
    steps = 0
    try:
        for step, values in run_metrics(run):
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)
            steps += 1
    finally:
        writer.close()
    return steps


def to_mlflow(
    run: Run,
    *,
    tracking_uri: str | None = None,
    experiment: str = "lca",
    run_name: str | None = None,
) -> str:
    """Log ``run``'s steps as a new MLflow run of ``experiment`` (made if new) at
    ``tracking_uri`` (default: MLflow's, e.g. ``MLFLOW_TRACKING_URI``); returns its id."""
    try:
        from mlflow import MlflowClient
        from mlflow.entities import Metric
    except ImportError as exc:
        raise LCAError(
            "lca export --mlflow needs MLflow: pip install 'loss-change-allocation[mlflow]'"
        ) from exc
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    name = run_name or Path(run.path).name
    made = client.create_run(experiment_id, run_name=name, tags={"lca.run": str(run.path)})
    run_id = made.info.run_id
    rows: list[Metric] = []
    now = int(time.time() * 1000)  # MLflow's timestamps: milliseconds
    try:
        for step, values in run_metrics(run):
            rows += [Metric(key, value, now, step) for key, value in values.items()]
            while len(rows) >= 1000:  # MLflow takes 1000 metrics a batch
                client.log_batch(run_id, metrics=rows[:1000])
                rows = rows[1000:]
        if rows:
            client.log_batch(run_id, metrics=rows)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
