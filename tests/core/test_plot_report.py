import html
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageSequence

from lca_core import ParamSpec, open_run
from lca_core import analysis as A
from lca_core import plot as P
from lca_core.errors import OutputError
from lca_core.tools.cli import main
from lca_core.tools.report import FIGURES, save_figures, write_report


def lines_of(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_loss_reconstruction_figure_shows_both_curves_and_residuals(run_path):
    run = open_run(run_path)
    fig = P.plot_loss_reconstruction(run)
    top, bottom = fig.axes
    curves = lines_of(top)
    np.testing.assert_allclose(curves["true loss L(θ_t)"].get_ydata(), run.losses)
    np.testing.assert_allclose(
        curves["L(θ_0) + cumulative Σ LCA"].get_ydata(), A.loss_reconstruction(run).reconstructed
    )
    np.testing.assert_allclose(
        lines_of(bottom)["residual r_t"].get_ydata(), run.residuals, atol=1e-12
    )
    assert top.get_ylabel() == "loss" and bottom.get_xlabel() == "step"


def test_helping_over_loss_stacks_to_100_percent(run_path):
    run = open_run(run_path)
    fig = P.plot_helping_over_loss(run)
    ax, twin = fig.axes
    assert ax.get_ylim() == (0, 100)
    tops = ax.collections[-1].get_paths()[0].vertices[:, 1]
    assert tops.max() == pytest.approx(100.0)
    np.testing.assert_allclose(twin.get_lines()[0].get_ydata(), run.losses)


def test_layer_totals_bars_match_the_totals_and_colours(run_path):
    run = open_run(run_path)
    ax = P.plot_layer_totals(run).axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, run.layer_lca.sum(0))
    assert [t.get_text() for t in ax.get_xticklabels()] == run.layers
    several = P.plot_layer_totals(
        [run.layer_lca, run.layer_lca * 1.1, run.layer_lca * 0.9], layers=run.layers
    )
    assert "mean ± std of 3 runs" in several.axes[0].get_title()


def test_distribution_counts_every_nonzero_value(run_path):
    run = open_run(run_path)
    fig = P.plot_lca_distribution(run)
    values = run.array("param_lca")
    left, right = fig.axes
    assert f"{(values < 0).sum():,}" in left.get_title()
    assert f"{(values > 0).sum():,}" in right.get_title()
    edges, neg, pos = P.lca_histogram(run)
    below_neg, below_pos = P.distributions.below_range(run, edges[0])
    assert neg.sum() + below_neg == (values < 0).sum()
    assert pos.sum() + below_pos == (values > 0).sum()
    tiny = (values != 0) & (np.abs(values) < edges[0])
    assert below_neg + below_pos == tiny.sum()
    assert edges[-1] >= np.abs(values).max()


def test_helping_per_layer_and_parameter_helping(run_path):
    run = open_run(run_path)
    h = A.helping_fractions(run)
    ax = P.plot_helping_per_layer(h).axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights[: len(run.layers)] == pytest.approx(
        [h.per_layer[n]["helped"] for n in run.layers]
    )
    p = A.parameter_helping(run)
    ax = P.plot_parameter_helping(p).axes[0]
    assert ax.get_xlim() == (0, 100)
    assert f"{100 * p.median:.1f} %" in ax.get_legend().get_texts()[0].get_text()


def test_synchronisation_raster_marks_every_peak(run_path):
    run = open_run(run_path)
    sync = A.synchronization(run, draws=50)
    ax = P.plot_synchronization(sync, run.steps).axes[0]
    ticks = sum(len(c.get_offsets()) for c in ax.collections)
    assert ticks == sum(len(p) for p in sync.peaks.values())
    assert [t.get_text() for t in ax.get_yticklabels()] == run.layers
    assert f"learns at once at {sync.count} steps" in ax.get_title()


def test_conv_kernels_are_tiled_by_output_and_input_channel():
    spec = ParamSpec("conv.weight", (2, 3, 2, 2), "float32", "conv", 0)
    values = np.arange(24.0).reshape(2, 3, 2, 2)
    image = P.as_image(values, spec)
    assert image.shape == (2 * 3 - 1, 3 * 3 - 1)
    np.testing.assert_array_equal(image[3:5, 6:8], values[1, 2])  # output 1, input 2
    assert np.isnan(image[2]).all() and np.isnan(image[:, 2]).all()  # gaps between tiles
    channel_last = ParamSpec("conv/kernel", (2, 2, 3, 2), "float32", "conv", 3)  # (h, w, in, out)
    np.testing.assert_array_equal(P.as_image(values.transpose(2, 3, 1, 0), channel_last), image)
    dense = ParamSpec("fc/kernel", (3, 4), "float32", "fc", 1)  # (in, out)
    np.testing.assert_array_equal(
        P.as_image(np.arange(12.0).reshape(3, 4), dense), np.arange(12.0).reshape(3, 4).T
    )
    bias = ParamSpec("conv.bias", (4,), "float32", "conv", 0)
    assert P.as_image(np.ones(4), bias).shape == (4, 1)


def test_heatmap_frame_shows_the_step_values(run_path):
    run = open_run(run_path)
    fig = P.plot_lca_heatmaps(run, 7)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == len(run.layout.params)
    np.testing.assert_allclose(images[0].get_array(), run.param_lca("fc0.weight")[7])
    assert "step 7 of 30" in fig.texts[0].get_text()
    norm = images[0].norm
    assert norm.vmin == -norm.vmax > -np.inf  # zero is white: a symmetric scale


def test_animation_has_the_requested_frames(run_path, tmp_path):
    run = open_run(run_path)
    path = P.animate_lca(run, tmp_path / "lca.gif", slice(2, 20, 3))
    with Image.open(path) as gif:
        assert sum(1 for _ in ImageSequence.Iterator(gif)) == len(range(2, 20, 3))
    with pytest.raises(ValueError, match="no steps"):
        P.animate_lca(run, tmp_path / "none.gif", slice(5, 5))


# -- the report ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(run_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(run_path), "-o", str(out), "--frames", "6"]) == 0
    return out


def test_report_is_self_contained_with_every_figure(report):
    text = report.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing from the network
    for _, fig in FIGURES:
        assert f'id="{fig.key}"' in text
        assert html.escape(fig.title) in text and html.escape(fig.caption) in text
    assert text.count('src="data:image/png;base64,') == len(FIGURES) - 1
    assert text.count('src="data:image/gif;base64,') == 1
    assert "Not available" not in text
    assert "budget used" in text and "helped, zeros ignored" in text
    assert "gradient passes" in text and "time in LCA" in text  # every terminal row


def test_report_says_what_a_bare_run_lacks(tmp_path):
    from lca_core import Allocator, FunctionBackend

    backend = FunctionBackend(lambda t: (float(t @ t), 2 * t), np.ones(3))
    alloc = Allocator(backend, tmp_path / "run")
    alloc.start()
    for s in (0.9, 0.5, 0.4, 0.1):
        alloc.advance(np.full(3, s))
    alloc.close()
    text = write_report(tmp_path / "run", tmp_path / "r.html", progress=False).read_text()
    assert "Not available" in text and "param_lca" in text
    assert 'id="reconstruction"><h2>Loss reconstruction</h2><img' in text


def chromium() -> str:
    path = os.environ.get("LCA_CHROMIUM") or shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium for the report test")
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    return path


def test_report_renders_in_headless_chromium(report, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=flags)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.resolve().as_uri(), timeout=120_000)  # generous on a loaded CI machine
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
        )
        # the sections added for validation LCA and per-class moments render as images
        heights = {
            key: page.locator(f"#{key} img").bounding_box()["height"]
            for key in ("validation", "class_synchronization", "heatmaps")
        }
        summary_rows = page.locator("table th").all_inner_texts()
        page.screenshot(path=str(tmp_path / "shot.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(images) == len(FIGURES)
    assert sorted(alt for *_, alt in images) == sorted(f.title for _, f in FIGURES)
    assert all(h > 150 for h in heights.values()), heights
    assert {"gradient passes", "budget used", "time in LCA"} <= set(summary_rows)
    assert all(done and width > 0 for done, width, _ in images), images
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("L"), dtype=float)
    assert shot.shape[0] > 3000  # the whole page, every figure stacked
    assert shot.std() > 20 and (shot < 128).mean() > 0.01  # not blank: text and figures


def test_validation_lca_has_its_analysis_text_and_figure(run_path):
    """The fixture run is recorded with validation data: its per-layer totals on both sets,
    the share carried over, a plain-language line, and the train-vs-validation figure."""
    run = open_run(run_path)
    g = A.generalization(run)
    np.testing.assert_allclose(g.train, run.layer_lca.sum(0))
    np.testing.assert_allclose(g.validation, run.array("val_layer_lca").sum(0))
    np.testing.assert_allclose(g.carried_over, g.validation / g.train)
    text = A.format_analysis(A.analyze(run))
    assert "carried over" in text and "overfits" in text
    ax = P.plot_train_vs_validation(run).axes[0]
    assert len(ax.lines) == 2 * len(run.layers) + 1  # solid + dashed per layer, the zero line
    val_first_layer = np.cumsum(run.array("val_layer_lca")[:, 0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), val_first_layer)


def test_per_frame_colour_scale_shows_every_step(run_path):
    """With one scale for the run, a late frame's small values are near white; with a
    per-frame scale each frame's 99th percentile sets its own range."""
    run = open_run(run_path)
    heat = P.heatmaps.HeatmapFigure(run, [0, run.steps - 1], scale="frame")
    late = np.abs(
        np.concatenate(
            [run.param_lca(s.name, slice(run.steps - 1, run.steps)).ravel() for s in heat.specs]
        )
    )
    heat.show(run.steps - 1)
    assert heat.norm.vmax == pytest.approx(np.percentile(late, 99))
    assert "colour scale of this frame" in heat.title.get_text()
    with pytest.raises(ValueError, match="scale must be"):
        P.heatmaps.HeatmapFigure(run, [0], scale="global")


def test_every_still_figure_saves_as_a_marked_png_that_lca_may_replace(run_path, tmp_path):
    out = tmp_path / "figures"
    saved = save_figures(run_path, out, progress=False)
    still = [f.key for _, f in FIGURES if not f.animated]
    assert [p.stem for p in saved] == still
    for path in saved:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300
            assert image.info.get("Software") == "lca"
    assert save_figures(run_path, out, progress=False) == saved  # its own files: replaced


def test_saving_figures_never_replaces_a_file_lca_did_not_write(run_path, tmp_path):
    (tmp_path / "layer_totals.png").write_bytes(b"my own picture")
    with pytest.raises(OutputError, match="not written by lca"):
        save_figures(run_path, tmp_path, progress=False)
    assert (tmp_path / "layer_totals.png").read_bytes() == b"my own picture"
    assert not (tmp_path / "reconstruction.png").exists()  # checked before any work
    saved = save_figures(run_path, tmp_path, progress=False, force=True)
    assert tmp_path / "layer_totals.png" in saved


def test_report_cli_writes_the_figures_too(run_path, tmp_path, capsys):
    args = ["report", str(run_path), "-o", str(tmp_path / "r.html"), "--frames", "2"]
    assert main([*args, "--figures", str(tmp_path / "figs")]) == 0
    n = len([f for _, f in FIGURES if not f.animated])
    assert len(list((tmp_path / "figs").glob("*.png"))) == n
    assert "figures written to" in capsys.readouterr().out


def test_the_report_checks_the_figure_files_before_any_work(
    run_path, tmp_path, monkeypatch, capsys
):
    """One analysis serves the page and the figures; a figure file lca did not write stops
    the command before the report is written."""
    import lca_core.tools.report

    calls = []
    analyze = lca_core.tools.report.analyze
    monkeypatch.setattr(
        lca_core.tools.report, "analyze", lambda *a, **k: calls.append(1) or analyze(*a, **k)
    )
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "layer_totals.png").write_bytes(b"my own picture")
    args = ["report", str(run_path), "-o", str(tmp_path / "r.html"), "--frames", "2"]
    assert main([*args, "--figures", str(figs)]) == 2
    assert "not written by lca" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists() and calls == []
    (figs / "layer_totals.png").unlink()
    assert main([*args, "--figures", str(figs)]) == 0
    assert (tmp_path / "r.html").exists() and len(calls) == 1


def test_lca_report_writes_beside_the_run_by_default_and_help_shows_defaults(
    run_path, tmp_path, capsys
):
    import shutil

    run = tmp_path / "runs" / "mine"
    shutil.copytree(run_path, run)
    assert main(["report", str(run), "--frames", "2"]) == 0
    assert (tmp_path / "runs" / "mine.html").is_file()  # as `lca demo` writes it
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    shown = capsys.readouterr().out
    assert "(default: 24)" in shown and "(default: 0)" in shown and "RUN.html" in shown
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    assert "def setup():" in capsys.readouterr().out  # --setup comes with an example
