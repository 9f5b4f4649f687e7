"""Every script in examples/ runs as a user would run it (tox env `examples`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lca_core import open_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: each example and the frameworks it needs
NEEDS = {
    "torch_loop": ["torch"],
    "lightning_fit": ["torch", "lightning"],
    "hf_trainer_gpt2": ["torch", "transformers"],
    "keras_fit": ["keras", "tensorflow"],
    "keras_custom_loop": ["keras", "tensorflow"],
    "jax_flax_cnn": ["jax", "flax", "optax"],
    "record_then_replay": ["torch"],
    "subset_error_bars": ["torch"],
}


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=EXAMPLES,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_every_example_is_listed():
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")}
    assert scripts == {*NEEDS, "read_a_run"}


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_example_writes_a_run_and_prints_its_summary(name, tmp_path):
    for module in NEEDS[name]:
        pytest.importorskip(module)
    out = run_example(name, "--out", str(tmp_path / "run"))
    assert "budget used" in out and "LCA per layer" in out
    run = open_run(tmp_path / "run")
    assert run.steps > 0 and run.summary().budget_used < 0.01
    if name == "subset_error_bars":
        assert "inside the 95 % intervals" in out and run.has("layer_lca_stderr")


def test_a_run_is_read_without_any_framework(tmp_path):
    pytest.importorskip("torch")
    run_example("torch_loop", "--out", str(tmp_path / "run"), "--steps", "20")
    out = run_example("read_a_run", str(tmp_path / "run"), "--report", str(tmp_path / "r.html"))
    assert "helped overall" in out and "== Accuracy" in out
    assert (tmp_path / "run-layer-totals.png").stat().st_size > 1000
    assert "Loss Change Allocation report" in (tmp_path / "r.html").read_text()
