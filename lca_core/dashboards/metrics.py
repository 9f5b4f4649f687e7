"""The numbers a dashboard shows, named once: ``lca/loss_change``, ``lca/layer/<layer>``, …

Every sink (TensorBoard, MLflow, W&B, Keras' logs, Lightning's and Hugging Face's loggers,
``lca export``) gets its numbers from :class:`Metrics`, so a tag means the same everywhere
(the table in docs/api.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..engine.step import StepResult
from ..layout import shares

#: what a dashboard's tag may hold (MLflow's rule, the strictest of the three): anything
#: else in a layer's name becomes ``_``
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


def layer_tag(layer: str) -> str:
    """A layer's name as it appears in a tag."""
    return _UNSAFE.sub("_", layer)


class Metrics:
    """Names a step's (or a sum of steps') numbers for the dashboards.

    Args:
        layers: the run's layers, in layout order.
        parts: the optimizer parts the run is split into (``optimizer=``), or none.
    """

    def __init__(self, layers: Sequence[str], parts: Sequence[str] = ()) -> None:
        tags = [layer_tag(layer) for layer in layers]
        self._names = {
            kind: [f"lca/{kind}/{tag}" for tag in tags]
            for kind in ("layer", "layer_stderr", "val/layer", *(f"{p}/layer" for p in parts))
        }
        self.parts = tuple(parts)

    def values(
        self,
        *,
        loss_change: float,
        sum_lca: float,
        residual: float,
        budget_used: float,
        pct_helped: float,
        layer_lca: np.ndarray,
        layer_lca_stderr: np.ndarray | None = None,
        val_layer_lca: np.ndarray | None = None,
        part_layer_lca: np.ndarray | None = None,
    ) -> dict[str, float]:
        """The named numbers; the per-layer groups a run does not have are left out."""
        out = {
            "lca/loss_change": float(loss_change),
            "lca/sum_lca": float(sum_lca),
            "lca/residual": float(residual),
            "lca/budget_used": float(budget_used),
            "lca/pct_helped": float(pct_helped),
        }
        groups: list[tuple[str, np.ndarray | None]] = [
            ("layer", layer_lca),
            ("layer_stderr", layer_lca_stderr),
            ("val/layer", val_layer_lca),
        ]
        if part_layer_lca is not None:
            groups += [
                (f"{p}/layer", row) for p, row in zip(self.parts, part_layer_lca, strict=True)
            ]
        for kind, row in groups:
            if row is not None:
                out.update(
                    zip(self._names[kind], np.asarray(row, dtype=np.float64).tolist(), strict=True)
                )
        return out

    def of_step(self, result: StepResult, budget_used: float) -> dict[str, float]:
        """One allocated step's numbers; ``budget_used`` is the run's so far."""
        return self.values(
            loss_change=result.loss_after - result.loss_before,
            sum_lca=float(np.sum(result.layer_lca)),
            residual=result.residual,
            budget_used=budget_used,
            pct_helped=result.pct_helped,
            layer_lca=result.layer_lca,
            layer_lca_stderr=result.layer_lca_stderr,
            val_layer_lca=result.val_layer_lca,
            part_layer_lca=result.part_layer_lca,
        )


class EpochSums:
    """The steps of an epoch summed, for a fit loop's epoch logs: loss change, Σ LCA,
    residual and every per-layer number add up; ``budget_used`` is the run's at the
    epoch's end (given to :meth:`values`) and ``pct_helped`` the share over the epoch's
    (parameter, step) pairs.

    A layer's standard error sums too: a fixed subset's steps share their examples, so
    their errors can be correlated up to fully, and Σ_t se_t bounds the sum's."""

    #: what adds up, step by step (per-layer rows, and the sign counts)
    _ROWS = ("layer_lca", "layer_lca_stderr", "val_layer_lca", "part_layer_lca", "layer_counts")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.steps = 0
        self._scalars = np.zeros(2)  # loss change, residual
        self._rows: dict[str, np.ndarray] = {}

    def add(self, result: StepResult) -> None:
        self.steps += 1
        self._scalars += (result.loss_after - result.loss_before, result.residual)
        for name in self._ROWS:
            if (row := getattr(result, name)) is not None:
                self._rows[name] = self._rows.get(name, 0) + row

    def values(self, budget_used: float) -> dict[str, float]:
        """The epoch's numbers, with the run's ``budget_used`` now (empty when no step of
        the epoch was allocated)."""
        if not self.steps:
            return {}
        rows = self._rows
        return self.metrics.values(
            loss_change=self._scalars[0],
            sum_lca=float(np.sum(rows["layer_lca"])),
            residual=self._scalars[1],
            budget_used=budget_used,
            pct_helped=shares(rows["layer_counts"])[0],
            layer_lca=rows["layer_lca"],
            layer_lca_stderr=rows.get("layer_lca_stderr"),
            val_layer_lca=rows.get("val_layer_lca"),
            part_layer_lca=rows.get("part_layer_lca"),
        )
