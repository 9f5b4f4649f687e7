"""``lca report``: one self-contained HTML page (no network, images embedded) for a run."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from tqdm.auto import tqdm

from . import plot
from ._version import __version__
from .analysis import analyze
from .run import Run, open_run

CAPTIONS = {
    "reconstruction": (
        "Loss reconstruction",
        "The black line is the true loss on the evaluation set; the dashed green line starts "
        "at the first loss and adds every step's allocations. If they overlap, the "
        "allocations account for the whole loss change. Below: each step's residual "
        "(ΔL − Σ LCA) with the tolerance as dotted lines.",
    ),
    "helping_over_loss": (
        "Who helped each step (paper Fig 3a)",
        "For each step, the share of parameters whose allocation was negative (helped, "
        "green), exactly zero (grey) or positive (hurt, red), with the loss on the right axis. "
        "The paper finds barely more than half of the moving parameters help on a step.",
    ),
    "layer_curves": (
        "LCA per layer over training",
        "Each layer's summed allocation per step: downward spikes are the moments a layer "
        "learned the most; values above zero mean the layer's motion raised the loss.",
    ),
    "layer_totals": (
        "Total LCA per layer (paper Fig 4)",
        "Each layer's allocations summed over training. Bars below zero: the layer lowered the "
        "loss; a bar above zero means the layer hurt overall (the paper finds this for the "
        "last layer of some networks).",
    ),
    "helping_per_layer": (
        "Helping per layer (paper Fig 3c)",
        "Share of (parameter, step) pairs that helped in each layer, over all pairs and over "
        "the nonzero ones; the dotted line is 50 %.",
    ),
    "distribution": (
        "Distribution of LCA values (paper Fig 3b)",
        "How many (parameter, step) allocations fall at each magnitude, helping on the left, "
        "hurting on the right, zeros excluded. Both sides are heavy-tailed: a few large "
        "allocations carry much of the change.",
    ),
    "parameter_helping": (
        "How often each parameter helped (paper Fig 3d)",
        "For each parameter, the share of the steps it moved on in which it helped. A peak "
        "near 50 % means parameters help and hurt almost equally often.",
    ),
    "synchronization": (
        "Moments of learning (paper Fig 6)",
        "Ticks mark each layer's top moments (the deepest local minima of its per-step LCA). "
        "Red columns are steps where every layer has a moment at once; the title compares "
        "their number with a baseline where each layer is shifted by up to ±2 steps.",
    ),
    "class_synchronization": (
        "Moments of learning per class",
        "As above, for the summed LCA of each class: do the classes learn at the same steps?",
    ),
    "heatmaps": (
        "Per-parameter LCA, animated (paper Fig 2)",
        "Every weight of every layer, frame by frame: green helped, red hurt, white did not "
        "change the loss. Convolution kernels are tiled by output (rows) × input channel "
        "(columns).",
    ),
}


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _gif(run: Run, frames: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = plot.animate_lca(
            run, Path(tmp) / "lca.gif", plot.frame_steps(run, max_frames=frames), dpi=70
        )
        return "data:image/gif;base64," + base64.b64encode(path.read_bytes()).decode()


def _figures(run: Run, results: dict[str, Any], frames: int) -> dict[str, Callable[[], str]]:
    """Each figure as a function returning its data URL (so a failure is contained)."""

    def ok(key: str) -> Any:
        value = results.get(key)
        if isinstance(value, dict) and "unavailable" in value:
            raise LookupError(value["unavailable"])
        return value

    def per_class_sync() -> str:
        per_class = run.array("class_layer_lca").sum(axis=2)  # (T, C)
        from .analysis import synchronization

        sync = synchronization(per_class, [f"class {c}" for c in range(per_class.shape[1])])
        return _png(plot.plot_synchronization(sync, run.steps, "Moments of learning per class"))

    return {
        "reconstruction": lambda: _png(plot.plot_loss_reconstruction(run)),
        "helping_over_loss": lambda: _png(plot.plot_helping_over_loss(ok("helping"), run.losses)),
        "layer_curves": lambda: _png(plot.plot_layer_curves(run)),
        "layer_totals": lambda: _png(plot.plot_layer_totals(run)),
        "helping_per_layer": lambda: _png(plot.plot_helping_per_layer(ok("helping"))),
        "distribution": lambda: _png(plot.plot_lca_distribution(run)),
        "parameter_helping": lambda: _png(plot.plot_parameter_helping(ok("parameter_helping"))),
        "synchronization": lambda: _png(
            plot.plot_synchronization(ok("synchronization"), run.steps)
        ),
        "class_synchronization": per_class_sync,
        "heatmaps": lambda: _gif(run, frames),
    }


def _table(rows: list[tuple[str, str, str]]) -> str:
    body = "".join(
        f'<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td><td class="why">'
        f"{html.escape(why)}</td></tr>"
        for k, v, why in rows
    )
    return f"<table>{body}</table>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.25em .8em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{font-weight:600;color:#444}
figure{margin:2em 0;border-top:1px solid #eee;padding-top:1em}
figure img{max-width:100%;height:auto;display:block}figcaption{color:#444;font-size:.95em}
.missing{color:#a33}.why{color:#666;font-size:.9em}.help{color:#1a9641}.hurt{color:#d7191c}pre{white-space:pre-wrap;font-size:.85em}
"""


def render_report(run: Run, *, frames: int = 24, progress: bool = True, seed: int = 0) -> str:
    """The report as one HTML string."""
    results = analyze(run, seed=seed)
    summary = results["summary"]
    figures = _figures(run, results, frames)
    sections = []
    for key, make in tqdm(figures.items(), desc="report", disable=not progress, leave=False):
        title, caption = CAPTIONS[key]
        try:
            body = f'<img alt="{html.escape(title)}" src="{make()}">'
        except (LookupError, ValueError) as exc:
            body = f'<p class="missing">Not available: {html.escape(str(exc).strip(chr(39)))}</p>'
        sections.append(
            f'<figure id="{key}"><h2>{html.escape(title)}</h2>{body}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    layers = "".join(
        f'<tr><th>{html.escape(n)}</th><td class="{"help" if v < 0 else "hurt"}">{v:+.6f}</td></tr>'
        for n, v in summary.layers.items()
    )
    meta = html.escape(json.dumps(run.metadata, indent=1, default=str))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>LCA report — {html.escape(run.path.name)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head>
<body><h1>Loss Change Allocation report</h1>
<p class="sub">{html.escape(str(run.path))} · lca {__version__}</p>
<p>Each optimizer step's change of the evaluation-set loss is split into one allocation per
parameter: negative (<span class="help">green</span>) lowered the loss, positive
(<span class="hurt">red</span>) raised it. The allocations of a step add up to its loss
change up to the residual shown below.</p>
<h2>Summary</h2>{_table(summary.rows())}
<h3>LCA per layer</h3><table>{layers}</table>
{"".join(sections)}
<h2>Run metadata</h2><pre>{meta}</pre>
</body></html>
"""


def write_report(
    run_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    frames: int = 24,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Write the report for the run at ``run_path`` to ``out``; returns the path."""
    text = render_report(open_run(run_path), frames=frames, progress=progress, seed=seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
