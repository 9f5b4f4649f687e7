import numpy as np

from lca_core import open_run
from lca_core.tools.cli import main
from lca_core.tools.report import FIGURES


def test_lca_demo_trains_writes_a_run_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "30", "--frames", "4"]) == 0
    text = capsys.readouterr().out
    run = open_run(out)
    summary = run.summary()
    assert run.steps == 30 and summary.loss_change < 0
    assert summary.budget_used < 0.01
    for label in (
        "loss change ΔL",
        "Σ LCA",
        "budget used",
        "unconverged steps",
        "helped / hurt / zero",
        "fc1",
        "fc2",
        "fc3",
    ):
        assert label in text
    assert f"{summary.loss_change:+.6f}" in text
    assert run.has("param_lca") and run.has("class_layer_lca") and run.has("val_losses")
    report = out.with_suffix(".html")
    assert f"report: {report}" in text
    # every figure of the registry, the animation included: the demo records everything
    assert report.read_text().count("data:image/") == len(FIGURES)
    # bad arguments are refused before anything is touched: the old run is intact
    (out / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(out), "--batch-size", "0"]) == 2
    assert open_run(out).steps == 30
    # a second demo replaces its own earlier run and report, and nothing of the user's
    assert (
        main(["demo", "--out", str(out), "--steps", "5", "--optimizer", "adam", "--frames", "2"])
        == 0
    )
    assert open_run(out).steps == 5
    assert np.isfinite(open_run(out).losses).all()
    assert (out / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".demo.lca-new-*"))  # the new run was swapped in whole


def test_demo_never_overwrites_a_page_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "demo"
    out.with_suffix(".html").write_text("my page")
    assert main(["demo", "--out", str(out), "--steps", "2", "--frames", "2"]) == 2
    assert "not written by lca; pass --force" in capsys.readouterr().err
    assert out.with_suffix(".html").read_text() == "my page" and not out.exists()
    assert main(["demo", "--out", str(out), "--steps", "2", "--frames", "2", "--force"]) == 0
    assert "Loss Change Allocation report" in out.with_suffix(".html").read_text()


def test_demo_refuses_to_replace_a_directory_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path), "--steps", "2"]) == 2
    assert "not an lca run; lca never deletes what it did not write" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"
