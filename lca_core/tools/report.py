"""``lca report``: one self-contained HTML page (no network, images embedded) for a run."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from tqdm.auto import tqdm

from .._version import __version__
from ..analysis import ANALYSES, Analysis, analyze
from ..engine.summary import Summary
from ..plot.figures import FIGURES as FIGURES_OF
from ..plot.figures import FigureSpec
from ..storage.outputs import HTML_MARK, PNG_METADATA, check_output, write_text
from ..storage.run import Run, open_run

#: every figure of the report, in order: each analysis joined with its figures
FIGURES = [(a, f) for a in ANALYSES for f in FIGURES_OF.get(a.key, ())]


def _data_url(image: Figure | bytes) -> str:
    if isinstance(image, bytes):
        return "data:image/gif;base64," + base64.b64encode(image).decode()
    buf = io.BytesIO()
    image.savefig(buf, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _unavailable(run: Run, results: dict[str, Any], analysis: Analysis) -> str | None:
    """Why the run cannot have the analysis' figures (data it did not store, or data the
    analysis found insufficient), or None."""
    result = results.get(analysis.key)
    if isinstance(result, dict) and "unavailable" in result:
        return result["unavailable"]
    return analysis.missing(run)


def _figure(
    run: Run, results: dict[str, Any], analysis: Analysis, spec: FigureSpec, frames: int
) -> str:
    """One figure's body: the image, or why the run cannot have it."""
    reason = _unavailable(run, results, analysis)
    if reason is not None:
        return f'<p class="missing">Not available: {html.escape(reason)}</p>'
    result = results.get(analysis.key)
    return (
        f'<img alt="{html.escape(spec.title)}" src="{_data_url(spec.draw(run, result, frames))}">'
    )


def _warning(summary: Summary) -> str:
    """The report's first line when the run is not as accurate as its summary promises."""
    warning = summary.accuracy_warning()
    return f'<p class="warning">Warning: {html.escape(warning)}</p>' if warning else ""


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
.missing{color:#a33}
.warning{background:#fdecea;color:#a11;padding:.6em 1em;border-left:4px solid #d7191c;
font-weight:600}
.why{color:#666;font-size:.9em}.help{color:#1a9641}.hurt{color:#d7191c}
pre{white-space:pre-wrap;font-size:.85em}
"""


def render_report(run: Run, *, frames: int = 24, progress: bool = True, seed: int = 0) -> str:
    """The report as one HTML string."""
    return _render(run, analyze(run, seed=seed), frames, progress)


def _render(run: Run, results: dict[str, Any], frames: int, progress: bool) -> str:
    summary = results["summary"]
    sections = []
    for analysis, spec in tqdm(FIGURES, desc="report", disable=not progress, leave=False):
        sections.append(
            f'<figure id="{spec.key}"><h2>{html.escape(spec.title)}</h2>'
            f"{_figure(run, results, analysis, spec, frames)}"
            f"<figcaption>{html.escape(spec.caption)}</figcaption></figure>"
        )
    layers = "".join(
        f'<tr><th>{html.escape(n)}</th><td class="{"help" if v < 0 else "hurt"}">{v:+.6f}</td></tr>'
        for n, v in summary.layers.items()
    )
    meta = html.escape(json.dumps(run.metadata, indent=1, default=str))
    return f"""<!doctype html>
<html lang="en"><head>{HTML_MARK}
<meta charset="utf-8"><title>LCA report — {html.escape(run.path.name)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head>
<body><h1>Loss Change Allocation report</h1>
<p class="sub">{html.escape(str(run.path))} · lca {__version__}</p>
<p>Each optimizer step's change of the evaluation-set loss is split into one allocation per
parameter: negative (<span class="help">green</span>) lowered the loss, positive
(<span class="hurt">red</span>) raised it. The allocations of a step add up to its loss
change up to the residual shown below.</p>
{_warning(summary)}<h2>Summary</h2>{_table(summary.rows())}
<h3>LCA per layer</h3><table>{layers}</table>
{"".join(sections)}
<h2>Run metadata</h2><pre>{meta}</pre>
</body></html>
"""


def save_figures(
    run_path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Every still figure of the report the run has data for, as ``directory/KEY.png``
    (for slides and papers; the animation stays in the HTML report). Returns the paths.

    Every target is checked before any work, as for the report: an existing file is
    replaced only when lca drew it (or with ``force=True``).
    """
    run = open_run(run_path)
    planned = _figure_targets(run, directory, force)
    return _save_figures(run, analyze(run, seed=seed), planned, progress)


def _figure_targets(
    run: Run, directory: str | os.PathLike[str], force: bool
) -> list[tuple[Analysis, FigureSpec, Path]]:
    """The still figures the run has data for, each with its checked target file."""
    drawable = [(a, f) for a, f in FIGURES if a.missing(run) is None and not f.animated]
    return [
        (a, f, check_output(Path(directory) / f"{f.key}.png", force=force)) for a, f in drawable
    ]


def _save_figures(
    run: Run,
    results: dict[str, Any],
    planned: list[tuple[Analysis, FigureSpec, Path]],
    progress: bool,
) -> list[Path]:
    written = []
    bar = tqdm(planned, desc="figures", disable=not (progress and planned), leave=False)
    for analysis, spec, target in bar:
        if _unavailable(run, results, analysis) is not None:
            continue
        figure = spec.draw(run, results.get(analysis.key), 0)
        assert isinstance(figure, Figure)  # still figures only (animated ones were left out)
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=90, metadata=PNG_METADATA)
        written.append(target)
    return written


def write_report(
    run_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    frames: int = 24,
    progress: bool = True,
    seed: int = 0,
    force: bool = False,
    figures: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the report for the run at ``run_path`` to ``out``; returns the path. With
    ``figures``, also every still figure as ``figures/KEY.png`` (see :func:`save_figures`),
    drawn from the same analyses.

    Every output is checked before any work: ``out`` must not be inside a run, a directory
    or a link, and an existing file is replaced only when lca wrote it (or with
    ``force=True``).
    """
    target = check_output(out, force=force)
    run = open_run(run_path)
    planned = _figure_targets(run, figures, force) if figures is not None else []
    results = analyze(run, seed=seed)
    path = write_text(target, _render(run, results, frames, progress))
    _save_figures(run, results, planned, progress)
    return path
