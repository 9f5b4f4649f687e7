import numpy as np

from lca_core import open_run
from lca_core.cli import main


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
    assert report.read_text().count("data:image/") == 10  # every figure and the animation
    # a second demo replaces its own earlier run
    assert (
        main(["demo", "--out", str(out), "--steps", "5", "--optimizer", "adam", "--frames", "2"])
        == 0
    )
    assert open_run(out).steps == 5
    assert np.isfinite(open_run(out).losses).all()


def test_demo_refuses_to_replace_a_directory_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path), "--steps", "2"]) == 2
    assert "not an lca run; lca never deletes what it did not write" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"
