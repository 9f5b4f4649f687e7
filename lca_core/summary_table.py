"""Rendering of a run summary: its rows, and the aligned table for the terminal."""

from __future__ import annotations

from typing import Any


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs of a summary, shared by the terminal table and the report."""
    rows = [
        ("steps", f"{s['steps']}"),
        ("loss", f"{s['loss_start']:.4f} → {s['loss_end']:.4f}"),
        ("loss change ΔL", f"{s['loss_change']:+.6f}"),
        ("Σ LCA", f"{s['sum_lca']:+.6f}"),
        ("Σ residual", f"{s['sum_residual']:+.2e}"),
        ("budget used", f"{100 * s['budget_used']:.3f} % of |ΔL| (budget {100 * s['budget']:g} %)"),
        ("unconverged steps", f"{s['unconverged_steps']}"),
        (
            "helped / hurt / zero",
            f"{s['pct_helped']:.2f} % / {s['pct_hurt']:.2f} % / {s['pct_zero']:.2f} %",
        ),
        ("helped, zeros ignored", f"{s['pct_helped_nonzero']:.2f} %"),
    ]
    if s.get("sum_drift"):
        rows.insert(5, ("Σ buffer drift", f"{s['sum_drift']:+.2e}"))
    if "gradient_passes" in s:
        rows.append(("gradient passes", f"{s['gradient_passes']}"))
    return rows


def format_summary(s: dict[str, Any]) -> str:
    """The summary as an aligned table a person can read at a glance."""
    rows = summary_rows(s)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("LCA per layer (negative = helped):")
    layer_width = max((len(name) for name in s["layers"]), default=0)
    for name, value in s["layers"].items():
        lines.append(f"  {name:<{layer_width}}  {value:+.6f}")
    return "\n".join(lines)
