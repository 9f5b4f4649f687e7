"""Reliability: one writer per run, nothing deleted that lca did not write, hostile or
damaged stores refused with lca errors (in a subprocess, under time and memory limits)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lca_core import Allocator, FunctionBackend, Layout, ParamSpec, open_run
from lca_core.errors import (
    CorruptRunError,
    MetadataError,
    NonFiniteError,
    OutputError,
    RunExistsError,
    RunLockedError,
)
from lca_core.storage.outputs import check_output
from lca_core.tools.cli import main
from lca_core.tools.report import write_report

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "core" / "probe_reader.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends")])}


def quadratic():
    return FunctionBackend(lambda t: (float(t @ t), 2 * t), np.ones(3))


# -- one writer per run -------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys, time, numpy as np
    from lca_core import Allocator, FunctionBackend, LCAError
    path, mode = sys.argv[1], sys.argv[2]
    backend = FunctionBackend(lambda t: (float(t @ t), 2 * t), np.ones(3))
    try:
        alloc = Allocator(backend, path)
        alloc.start()
        for i in range(3):
            alloc.advance(np.full(3, 0.9 - 0.1 * i))
        alloc.flush()
        if mode == "hold":
            print("ready", flush=True)
            time.sleep(600)
        alloc.close()
        print("OK")
    except LCAError as exc:
        print("LCA", type(exc).__name__)
    """
)


def writer(path, mode):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode], stdout=subprocess.PIPE, text=True, env=ENV
    )


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_one_is_taken_over(tmp_path):
    path = tmp_path / "run"
    holder = writer(path, "hold")
    try:
        assert holder.stdout.readline().strip() == "ready"
        for options in ({"resume": True}, {"overwrite": True}, {}):
            with pytest.raises(RunLockedError, match=rf"pid {holder.pid} on .*writing since"):
                Allocator(quadratic(), path, **options)
        assert open_run(path).steps == 3  # readers never block, and see whole steps
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with pytest.warns(UserWarning, match=rf"taking over .* pid {holder.pid}.*committed steps"):
        alloc = Allocator(quadratic(), path, resume=True)
    alloc.start(np.full(3, 0.7))
    alloc.advance(np.full(3, 0.5))
    alloc.close()
    run = open_run(path)
    assert run.steps == 4
    np.testing.assert_array_equal(run.step_index, [0, 1, 2, 3])
    assert not (path / ".lca-writer.json").exists()  # a closed run names no holder


def test_a_failing_step_commits_the_steps_before_it(tmp_path):
    """No close(), as when the error ends the program: the allocated steps are on disk."""
    alloc = Allocator(quadratic(), tmp_path / "run")
    alloc.start()
    for s in (0.9, 0.8, 0.7):
        alloc.advance(np.full(3, s))
    with pytest.raises(NonFiniteError):
        alloc.advance(np.full(3, np.nan))
    run = open_run(tmp_path / "run")
    assert run.steps == 3
    np.testing.assert_allclose(run.losses, [3.0, 2.43, 1.92, 1.47])


def test_runs_started_at_once_on_one_path_give_one_run(tmp_path):
    path = tmp_path / "run"
    procs = [writer(path, "once") for _ in range(4)]
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outcomes.count("OK") == 1, outcomes
    assert all(o in ("LCA RunLockedError", "LCA RunExistsError") for o in outcomes if o != "OK")
    run = open_run(path)
    assert run.steps == 3 and np.all(np.isfinite(run.losses))


# -- never delete what lca did not write ---------------------------------------------------
def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(RunExistsError, match=r"not an lca run.*never deletes"):
        Allocator(quadratic(), tmp_path, overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_overwrite_of_a_run_replaces_only_its_own_files(tmp_path):
    path = tmp_path / "run"
    for steps in (3, 1):
        alloc = Allocator(quadratic(), path, overwrite=True)
        alloc.start()
        for i in range(steps):
            alloc.advance(np.full(3, 0.9 - 0.1 * i))
        alloc.close()
        (path / "notes.md").write_text("mine")
    assert open_run(path).steps == 1 and (path / "notes.md").read_text() == "mine"
    with pytest.raises(RunExistsError, match=r"overwrite=True.*resume=True"):
        Allocator(quadratic(), path)


def test_report_outputs_are_checked_before_any_work(run_path, tmp_path):
    mine = tmp_path / "mine.html"
    mine.write_text("my page")
    group = (run_path / "zarr.json").read_bytes()
    assert main(["report", str(run_path), "-o", str(mine)]) == 2
    assert main(["report", str(run_path), "-o", str(run_path / "zarr.json")]) == 2
    assert main(["report", str(run_path), "-o", str(run_path / "sub" / "r.html")]) == 2
    assert mine.read_text() == "my page" and (run_path / "zarr.json").read_bytes() == group
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path)
    (tmp_path / "link.html").symlink_to(mine)
    with pytest.raises(OutputError, match="is a link"):
        check_output(tmp_path / "link.html")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_output(mine / "r.html")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="permission"):
            check_output(locked / "r.html")
    # with --force the user's file is replaced; a report lca wrote is replaced without it
    assert main(["report", str(run_path), "-o", str(mine), "--force", "--frames", "2"]) == 0
    assert check_output(mine) == mine
    (tmp_path / "data.json").write_text("[1, 2]")
    assert main(["analyze", str(run_path), "--json", str(tmp_path / "data.json")]) == 2
    assert (tmp_path / "data.json").read_text() == "[1, 2]"


# -- metadata and names ---------------------------------------------------------------------
def test_metadata_is_converted_to_json_or_refused_before_anything_is_written(tmp_path):
    meta = {"lr": np.float32(0.5), "dir": Path("/data"), "sizes": np.arange(3)}
    alloc = Allocator(quadratic(), tmp_path / "run", metadata=meta)
    alloc.close()
    assert open_run(tmp_path / "run").metadata["metadata"] == {
        "lr": 0.5,
        "dir": "/data",
        "sizes": [0, 1, 2],
    }
    with pytest.raises(MetadataError, match="cannot be stored as JSON"):
        Allocator(quadratic(), tmp_path / "other", metadata={"model": object()})
    assert not (tmp_path / "other").exists()


def test_layer_names_with_dollars_draw_as_text(tmp_path):
    layout = Layout(
        (ParamSpec("a$b.w", (3,), "float64", "a$b", 0), ParamSpec("c$.w", (2,), "float64", "c$", 0))
    )
    scale = np.arange(1.0, 6.0)
    backend = FunctionBackend(lambda t: (0.5 * scale @ t**2, scale * t), np.ones(5), layout=layout)
    alloc = Allocator(backend, tmp_path / "run", store_params=True)
    alloc.start()
    rng = np.random.default_rng(0)
    for t in range(12):
        alloc.advance(np.ones(5) * 0.9 ** (t + 1) + 0.01 * rng.normal(size=5))
    alloc.close()
    text = write_report(tmp_path / "run", tmp_path / "r.html", frames=2, progress=False)
    missing = re.findall(r'class="missing">Not available: needs (\w+)', text.read_text())
    assert sorted(set(missing)) == ["class_layer_lca", "part_layer_lca", "val_layer_lca"]  # not "$"


# -- hostile and damaged stores --------------------------------------------------------------
def probe(path, report=False):
    """The reader's outcome on ``path`` in a subprocess: 'OK' or 'LCA <Error>'. A crash, a
    non-lca exception, more than 3 GiB or 120 s fail the test."""
    cmd = [sys.executable, str(PROBE), str(path), *(["--report"] if report else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, (
        f"reader failed with rc {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout.strip().splitlines()[-1]


def edit_json(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def attrs(edit):
    return lambda run: edit_json(run / "zarr.json", lambda d: edit(d["attributes"]))


def array_meta(name, edit):
    return lambda run: edit_json(run / name / "zarr.json", edit)


def truncate(rel, keep=0.5):
    def mutate(run):
        data = (run / rel).read_bytes()
        (run / rel).write_bytes(data[: int(len(data) * keep)])

    return mutate


def flip(rel):
    def mutate(run):
        data = bytearray((run / rel).read_bytes())
        data[len(data) // 2] ^= 0x10
        (run / rel).write_bytes(bytes(data))

    return mutate


def relink(rel, target):
    def mutate(run):
        (run / rel).unlink()
        os.symlink(target if isinstance(target, str) else target(run), run / rel)

    return mutate


def outside_file(run):
    path = run.parent / "outside.bin"
    path.write_bytes(np.arange(64, dtype=np.float64).tobytes())
    return str(path)


def fifo(rel):
    def mutate(run):
        (run / rel).unlink()
        os.mkfifo(run / rel)

    return mutate


def nan_row(run):
    import zarr

    arr = zarr.open_group(str(run), mode="r+")["losses"]
    arr[2] = np.nan


def set_counter(value):
    return attrs(lambda a: a["lca_commit"].__setitem__("lca", value))


def claim_rows(rows, *, version=None):
    """Every per-step array declares ``rows`` rows and the counters commit them all: a store
    consistent with itself whose data is not there."""

    def mutate(run):
        for meta in run.glob("*/zarr.json"):
            edit_json(meta, lambda d: d.__setitem__("shape", [rows, *d["shape"][1:]]))
        set_counter(rows - 1)(run)
        attrs(lambda a: a["lca_commit"].__setitem__("trajectory", rows - 1))(run)
        if version is not None:
            attrs(lambda a: a["lca"].__setitem__("format_version", version))(run)

    return mutate


HOSTILE = {
    "truncated per-parameter chunk": truncate("param_lca/c/0/0"),
    "empty chunk": truncate("losses/c/0", 0.0),
    "flipped byte in a chunk": flip("losses/c/0"),
    "deleted chunk inside the committed rows": lambda run: (run / "layer_lca/c/0/0").unlink(),
    "chunk linked outside the run": relink("losses/c/0", outside_file),
    "chunk linked to /dev/zero": relink("param_lca/c/0/0", "/dev/zero"),
    "chunk that is a FIFO": fifo("residuals/c/0"),
    "counter of 1e12": set_counter(10**12),
    "arrays of 1e12 rows, all committed": claim_rows(10**12),
    "arrays of 1e12 rows, all committed, format 1": claim_rows(10**12, version=1),
    "counter 1e300 (float)": set_counter(1e300),
    "negative counter": set_counter(-3),
    "counter as a string": set_counter("12"),
    "format version a string": attrs(lambda a: a["lca"].__setitem__("format_version", "x")),
    "format version null": attrs(lambda a: a["lca"].__setitem__("format_version", None)),
    "layout of 1e13 parameters": attrs(
        lambda a: a["lca"]["layout"][0].__setitem__("shape", [10**7, 10**6])
    ),
    "declared width of 1e12 columns": array_meta(
        "param_lca", lambda d: d.__setitem__("shape", [d["shape"][0], 10**12])
    ),
    "wrong dtype": array_meta("losses", lambda d: d.__setitem__("data_type", "int8")),
    "wrong row width": array_meta(
        "layer_lca", lambda d: d.__setitem__("shape", [d["shape"][0], 7])
    ),
    "wrong ndim": array_meta("losses", lambda d: d.__setitem__("shape", [31, 1])),
    "shrunk array": array_meta("losses", lambda d: d.__setitem__("shape", [3])),
    "unknown codec": array_meta(
        "drift", lambda d: d["codecs"][-1].__setitem__("name", "no-such-codec")
    ),
    "invalid JSON metadata": lambda run: (run / "zarr.json").write_text("{not json"),
    "non-UTF-8 metadata": lambda run: (run / "zarr.json").write_bytes(b'{"\xff\xfe": 1}'),
    "missing array": lambda run: shutil.rmtree(run / "drift"),
    "NaN written into a committed row": nan_row,
    "budget NaN in the config": attrs(
        lambda a: a["lca"]["config"].__setitem__("budget", float("nan"))
    ),
    "every a string in the config": attrs(lambda a: a["lca"]["config"].__setitem__("every", "2")),
    "a flag that is a number in the config": attrs(
        lambda a: a["lca"]["config"].__setitem__("per_class", 1)
    ),
}


def copy_of(run_path, tmp_path):
    copy = tmp_path / "copy" / "run"
    shutil.copytree(run_path, copy, symlinks=True)
    return copy


def test_an_intact_run_reads_fully(run_path, tmp_path):
    assert probe(copy_of(run_path, tmp_path), report=True) == "OK"


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_or_damaged_store_is_refused_with_an_lca_error(run_path, tmp_path, case):
    run = copy_of(run_path, tmp_path)
    HOSTILE[case](run)
    started = time.monotonic()
    outcome = probe(run)
    assert outcome.startswith("LCA "), f"{case}: {outcome}"
    assert time.monotonic() - started < 60


def test_rows_declared_beyond_the_commit_are_never_read(run_path, tmp_path):
    """A writer killed between growing an array and committing leaves more rows than the
    counters say: the reader stops at the commit, so even 1e12 declared rows cost nothing."""
    run = copy_of(run_path, tmp_path)
    array_meta("param_lca", lambda d: d.__setitem__("shape", [10**12, d["shape"][1]]))(run)
    assert probe(run) == "OK"


FILES = st.sampled_from(
    [
        "zarr.json",
        "losses/zarr.json",
        "losses/c/0",
        "param_lca/c/0/0",
        "layer_lca/c/0/0",
        "theta/c/0/0",
        "layer_counts/zarr.json",
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@st.composite
def mutations(draw):
    kind = draw(st.sampled_from(["truncate", "flip", "delete", "garbage", "attribute"]))
    rel = draw(FILES)
    if kind == "attribute":
        key = draw(
            st.sampled_from(
                [
                    "lca",
                    "trajectory",
                    "lca_started",
                    "format_version",
                    "num_classes",
                    "layers",
                    "config",
                ]
            )
        )
        return kind, key, draw(JSON_VALUES)
    return kind, rel, draw(st.integers(0, 10**6))


def apply(run, mutation):
    kind, target, value = mutation
    if kind == "attribute":

        def edit(a):
            place = a["lca_commit"] if target in ("lca", "trajectory", "lca_started") else a["lca"]
            place[target] = value

        try:
            return attrs(edit)(run)
        except (ValueError, KeyError, TypeError, FileNotFoundError):
            return None  # an earlier mutation broke the JSON, or deleted the file
    path = run / target
    if not path.exists():  # an earlier mutation deleted it
        return None
    data = path.read_bytes()
    if not data:
        return None
    if kind == "truncate":
        path.write_bytes(data[: value % max(len(data), 1)])
    elif kind == "flip":
        flipped = bytearray(data)
        flipped[value % len(flipped)] ^= 1 << (value % 8)
        path.write_bytes(bytes(flipped))
    elif kind == "delete":
        path.unlink()
    else:
        path.write_bytes(np.random.default_rng(value).bytes(len(data)))


@settings(
    max_examples=int(os.environ.get("LCA_FUZZ_EXAMPLES", 20)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(mutations(), min_size=1, max_size=3))
def test_fuzzed_stores_raise_only_lca_errors_in_bounded_time_and_memory(
    run_path, tmp_path_factory, mutation_list
):
    run = copy_of(run_path, tmp_path_factory.mktemp("fuzz"))
    for mutation in mutation_list:
        if (run / mutation[1]).exists() or mutation[0] == "attribute":
            apply(run, mutation)
    outcome = probe(run)
    if log := os.environ.get("LCA_FUZZ_LOG"):  # counts for reports: LCA_FUZZ_EXAMPLES=500
        with open(log, "a") as f:
            f.write(json.dumps({"mutations": mutation_list, "outcome": outcome}) + "\n")
    assert outcome == "OK" or outcome.startswith("LCA "), outcome


def test_a_damaged_run_is_not_resumed(run_path, tmp_path):
    run = copy_of(run_path, tmp_path)
    flip("losses/c/0")(run)
    before = (run / "losses" / "c" / "0").read_bytes()
    with pytest.raises(CorruptRunError, match="losses"):
        Allocator(quadratic(), run, resume=True)
    assert (run / "losses" / "c" / "0").read_bytes() == before
