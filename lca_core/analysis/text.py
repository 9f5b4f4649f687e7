"""Each analysis as lines of terminal text (the catalog says which renders which)."""

from __future__ import annotations

import numpy as np

from ..engine.summary import percent
from .accuracy import Accuracy
from .helping import HelpingFractions, ParameterHelping
from .layers import Concentration, Generalization, LayerTotals
from .moments import Synchronization
from .oscillations import Oscillations
from .parts import OptimizerParts
from .reconstruction import Reconstruction
from .tails import Tails


def helping(h: HelpingFractions) -> list[str]:
    return [
        f"  {name:<12} helped {v['helped']:6.2f}  hurt {v['hurt']:6.2f}  zero {v['zero']:6.2f}"
        f"  helped, zeros ignored {v['helped_nonzero']:6.2f}"
        for name, v in h.per_layer.items()
    ]


def parameter_helping(p: ParameterHelping) -> list[str]:
    return [
        f"  mean {100 * p.mean:.1f} %, median {100 * p.median:.1f} %",
        "  (of the steps a parameter moved the loss on, the share it helped; near 50 % = "
        "parameters help and hurt about equally often, as the paper finds)",
    ]


def concentration(c: Concentration) -> list[str]:
    lines = [
        f"  Gini of |Σ_t LCA| over parameters: {c.gini:.3f}  (0 = every parameter did an "
        "equal share of the learning, 1 = one parameter did it all)"
    ]
    lines += [
        f"  top {pct:g} % of parameters do {100 * share:.1f} % of the helping"
        for pct, share in c.top_share.items()
    ]
    return lines


def tails(t: Tails) -> list[str]:
    m = t.tail_mass
    lines = [
        f"  beyond {k:g}σ: {100 * o:.3g} % vs Gaussian {100 * g:.3g} % (×{r:.3g})"
        for k, o, g, r in zip(m.k, m.observed, m.gaussian, m.ratio, strict=True)
    ]
    for name, w in (("helping", t.helping), ("hurting", t.hurting)):
        if w is not None:
            lines.append(
                f"  Weibull fit of {name} magnitudes: shape k = {w.shape:.3f}, "
                f"scale {w.scale:.3g}, KS D = {w.ks_statistic:.3f}"
            )
    return [
        *lines,
        "  (×: how much more often than a Gaussian of the same spread a value lies that far "
        "out — above 1 = heavy tails, a few allocations carry much of the change. Weibull "
        "k < 1 = heavy-tailed (the paper plots 0.53); KS D = the fit's largest gap, small = "
        "a good fit)",
    ]


def oscillations(o: Oscillations) -> list[str]:
    lines = []
    for name, r in (("motion Δθ", o.motion), ("gradient", o.gradient)):
        if r is None:
            lines.append(f"  {name}: not recorded")
        else:
            lines.append(
                f"  {name}: mean {r.mean:.2f}, median {r.median:.2f}, "
                f"never changed {100 * r.never_changed:.1f} %"
            )
    return [
        *lines,
        "  (steps a weight keeps moving the same way / its gradient keeps its sign; short = "
        "oscillating. The paper finds 6.7 and 9.5 steps for a ResNet)",
    ]


def smallest_p(s: Synchronization) -> float:
    """The smallest p the shifted baseline can give: the draws that shift every series by
    the same amount, (2·shift + 1)^(1 − series) of them, keep every synchronised moment."""
    return max(1 / (1 + s.draws), (2 * s.shift + 1) ** (1 - len(s.names)))


def synchronization(s: Synchronization) -> list[str]:
    return [
        f"  {s.count} steps where every layer has a moment of learning at once: {s.synchronized}",
        f"  (layers shifted at random by up to ±{s.shift} steps give {s.baseline_mean:.2f} ± "
        f"{s.baseline_std:.2f}; p = {s.p_value:.3g}, small = not chance — with "
        f"{len(s.names)} layers the smallest p this test can give is ≈ {smallest_p(s):.2g}, "
        "as the draws that shift every layer alike keep every moment. The paper finds 9.4 "
        "vs 0.4)",
    ]


def accuracy(a: Accuracy) -> list[str]:
    r = a.residuals
    lines = [
        f"  {a.rule}: mean |r| {r.mean_abs:.2e}, max |r| {r.max_abs:.2e}, "
        f"budget used {percent(r.budget_used)}"
    ]
    lines.append(
        "  quadrature sub-intervals per step: "
        + ", ".join(
            f"{n} on {count} step{'s' if count != 1 else ''}"
            for n, count in sorted(a.panels.items())
        )
    )
    if a.first_order is not None:
        f = a.first_order
        lines.append(
            f"  first order: mean |r| {f.mean_abs:.2e}, max |r| {f.max_abs:.2e}, "
            f"budget used {percent(f.budget_used)}"
        )
    return [
        *lines,
        "  (r = ΔL − Σ LCA per step; budget used = |Σ r| / |ΔL|, under 1 % = the allocation "
        "accounts for the loss change. 'first order' is what the paper's one-point rule would "
        "have given on the same steps — often far over budget)",
    ]


def reconstruction(r: Reconstruction) -> list[str]:
    return [
        f"  max |L − (L₀ + Σ LCA)| = {r.max_abs_gap:.2e}  (the true loss vs the first loss "
        "plus every allocation so far; ~0 = the allocations account for the loss)"
    ]


def generalization(g: Generalization) -> list[str]:
    lines = [
        f"  {name:<12} evaluation {t:+.4f}  validation {v:+.4f}  carried over {100 * c:5.1f} %"
        for name, t, v, c in zip(g.layers, g.train, g.validation, g.carried_over, strict=True)
    ]
    return [
        *lines,
        "  (carried over: the share of a layer's evaluation-loss reduction that also lowered "
        "the validation loss; low or negative = that layer overfits)",
    ]


def class_synchronization(per_class: dict[int, Synchronization]) -> list[str]:
    lines = [
        f"  class {c}: {s.count} synchronised steps (baseline {s.baseline_mean:.2f} ± "
        f"{s.baseline_std:.2f}, p = {s.p_value:.3g})"
        for c, s in per_class.items()
    ]
    if per_class:
        s = next(iter(per_class.values()))
        lines.append(
            f"  (p ≈ {smallest_p(s):.2g} is the smallest this test can give with "
            f"{len(s.names)} layers: a class at that value is as synchronised as it can show)"
        )
    return lines


def layer_totals(t: LayerTotals) -> list[str]:
    """Each layer's total, with its 95 % interval for the full set on a subset."""
    if t.stderr is None:
        return [f"  {name:<12} {v:+.6f}" for name, v in zip(t.layers, t.totals, strict=True)]
    return [
        f"  {name:<12} {v:+.6f} ± {1.96 * se:.2g} (95 %, for the full set)"
        for name, v, se in zip(t.layers, t.totals, t.stderr, strict=True)
    ]


def optimizer_parts(p: OptimizerParts) -> list[str]:
    lines = []
    for j, name in enumerate(p.layers):
        terms = "  ".join(f"{part} {p.totals[i, j]:+.4f}" for i, part in enumerate(p.parts))
        verdict = "helped" if p.layer_totals[j] < 0 else "hurt"
        lines.append(
            f"  {name:<12} {p.layer_totals[j]:+.4f} ({verdict}, mostly by {p.decided_by[j]}): "
            f"{terms}"
        )
    if p.stderr_bound is not None:
        worst = float(np.max(p.stderr_bound))
        lines.append(f"  (on an evaluation subset: each total within ± {1.96 * worst:.2g}, 95 %)")
    return [
        *lines,
        "  (gradient: this step's gradient; momentum: the update carried from earlier "
        "steps; weight_decay: the pull toward zero. A layer that hurt 'by momentum' was "
        "carried past where its gradient pointed)",
    ]
