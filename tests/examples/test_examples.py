"""Every script in examples/ runs as a user would run it (tox env `examples`)."""

import json
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
    "jax_nnx_cnn": ["jax", "flax", "optax"],
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
    assert scripts == {*NEEDS, "read_a_run", "ddp_torchrun"}


def torchrun(name: str, *args: str) -> str:
    """An example as a 2-process DDP job (gloo on CPU), as `torchrun` starts it."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    proc = subprocess.run(
        [*launch, "2", str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=EXAMPLES,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_a_ddp_job_of_two_processes_writes_one_run(tmp_path):
    pytest.importorskip("torch")
    out = torchrun("ddp_torchrun", "--steps", "20", "--out", str(tmp_path / "run"))
    assert out.count("budget used") == 1  # rank 0 alone prints
    run = open_run(tmp_path / "run")
    assert run.steps == 20 and run.metadata["policy"]["processes"] == 2
    assert run.summary().budget_used < 0.01


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


PAPER = EXAMPLES / "paper" / "reproduce.py"
SECTIONS = (
    "Table 1",
    "zero LCA",
    "layers hurt",
    "heavy-tailed",
    "oscillate",
    "same moments",
    "First order",
    "Why the last layer hurts",
)


def reproduce(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(PAPER), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_the_paper_page_is_written_from_real_runs(tmp_path):
    """A small real reproduction: every finding's section has a filled row and a verdict."""
    for module in ("torch", "sklearn", "mnist1d"):
        pytest.importorskip(module)
    page, results = tmp_path / "reproduction.md", tmp_path / "results.json"
    reproduce(
        "--quick",
        "--steps",
        "25",
        "--datasets",
        "digits",
        "--networks",
        "fc",
        "--optimizers",
        "sgd-momentum",
        "--page",
        str(page),
        "--results",
        str(results),
    )
    text = page.read_text()
    for section in SECTIONS:
        assert section in text, section
    assert text.count("**Verdict: ") == len(SECTIONS)
    rows = [line for line in text.splitlines() if line.startswith("| digits | fc |")]
    assert len(rows) == len(SECTIONS)
    assert "300 (300 with LCA ≡ 0)" in text  # digits: 3 always-zero pixels × 100 units
    runs = json.loads(results.read_text())["runs"]
    assert len(runs) == 2 and {r["seed"] for r in runs} == {0, 1}  # --quick: two seeds


def _saved(tmp_path, helped: float, resnet_first: float, resnet_last: float) -> str:
    """The page rendered from made-up measurements: the verdict rules, without training."""
    base = {
        "zero": 0.0,
        "always_zero": 0.0,
        "dead_weights": None,
        "weibull_help": 0.5,
        "weibull_hurt": 0.5,
        "tail_ratio_3": 3.0,
        "osc_motion": 6.0,
        "osc_gradient": 10.0,
        "sync_count": 9.0,
        "sync_baseline": 0.5,
        "sync_p": 0.001,
        "budget_simpson": 0.01,
        "budget_first_order": 5.0,
        "layers": ["stem.conv", "block1.conv1", "fc"],
    }
    runs = [
        base
        | {
            "dataset": "d",
            "network": "resnet",
            "optimizer": "sgd-momentum",
            "seed": s,
            "helped_nonzero": helped + 0.1 * s,
            "layer_totals": [resnet_first + 0.01 * s, -1.0, resnet_last + 0.01 * s],
        }
        for s in range(3)
    ]
    settings = {
        "quick": False,
        "steps": 9,
        "seeds": [0, 1, 2],
        "date": "d",
        "machine": "m",
        "minutes": 1.0,
    }
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps({"settings": settings, "runs": runs}))
    reproduce("--from-results", str(saved), "--page", str(tmp_path / "page.md"))
    return (tmp_path / "page.md").read_text()


def test_paper_verdicts_follow_their_stated_rules(tmp_path):
    good = _saved(tmp_path, helped=50.7, resnet_first=0.2, resnet_last=0.3)
    assert good.count("**Verdict: reproduced.**") == 5  # all but the FC-only ones
    assert "**Verdict: not judged" in good  # synchronisation: the paper measured FC nets
    bad = _saved(tmp_path, helped=90.0, resnet_first=-0.2, resnet_last=-0.3)
    table_1 = bad.split("## 1.")[1].split("## 2.")[0]
    assert "**Verdict: not reproduced.**" in table_1
    layers = bad.split("## 3.")[1].split("## 4.")[0]
    assert "**Verdict: not reproduced.**" in layers and "| none |" in layers


def test_the_hugging_face_trainer_under_torchrun_writes_one_run(tmp_path):
    """The unmodified HF example launched by torchrun: every rank prints the same summary."""
    pytest.importorskip("transformers")
    out = torchrun("hf_trainer_gpt2", "--steps", "6", "--out", str(tmp_path / "run"))
    tables = [t for t in out.split("steps ") if "budget used" in t]
    assert len(tables) == 2  # both ranks print their summary
    # every line but the timing, compared word by word: the timing's width sets the columns'
    same = [[ln.split() for ln in t.splitlines() if "time in LCA" not in ln] for t in tables]
    assert same[0] == same[1]
    run = open_run(tmp_path / "run")
    assert run.steps == 6 and run.metadata["policy"]["processes"] == 2


def test_the_readme_loop_gives_a_report_with_every_figure(tmp_path, monkeypatch):
    """README's "In your own training loop", run as written (its hidden setup first), then
    `lca report` on the run: no figure is missing."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import re

    from lca_core.tools.cli import main

    readme = (EXAMPLES.parent / "README.md").read_text()
    setup, loop = re.findall(r"```python\n(.*?)\n```", readme, flags=re.S)[:2]
    monkeypatch.chdir(tmp_path)
    exec(compile(setup + "\n" + loop, "README.md", "exec"), {})
    assert main(["report", "runs/readme", "--frames", "2"]) == 0
    html = (tmp_path / "runs" / "readme.html").read_text()
    assert html.count("<figure") == 13
    assert "Not available" not in html


def test_the_ddp_example_run_without_torchrun_says_how_to_run_it():
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "ddp_torchrun.py")],
        capture_output=True, text=True, timeout=120, cwd=EXAMPLES, env=env,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "torchrun --standalone --nproc_per_node 2" in proc.stderr
    assert "Traceback" not in proc.stderr
