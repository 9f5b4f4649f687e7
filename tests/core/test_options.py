"""The options are defined once (lca_core.options.Options) and every part reads them there;
the backend contract declares its optional capabilities; the layers do not import upward."""

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lca_core import Allocator, Backend, FunctionBackend, Tracker, UnknownOptionError, open_run
from lca_core.contract import MEANING, OPTIONS
from lca_core.options import Options
from lca_core.protocol import check_backend
from lca_core.replay import NOT_FOR_REPLAY
from lca_core.storage.store import array_specs, recorded_by
from tests.core.models import cubic


def test_the_contract_table_is_the_options_definition():
    names = [f for f in Options.defaults()]
    assert list(OPTIONS) == names and list(MEANING) == names
    assert all(MEANING[n] for n in names)
    assert {n: getattr(Options(), n) for n in names} == OPTIONS


def test_the_allocator_takes_every_allocator_option_by_name_and_refuses_the_others():
    backend = FunctionBackend(cubic(0, 2), np.ones(2))
    for name in Options.names(part="allocator"):
        if name != "store":
            Allocator(backend, **{name: OPTIONS[name]})
    for name in (*Options.names(part="backend"), *Options.names(part="tracker")):
        with pytest.raises(UnknownOptionError, match="tracker or the backend"):
            Allocator(backend, **{name: 1})
    with pytest.raises(UnknownOptionError, match="Did you mean 'tol'"):
        Allocator(backend, tl=1e-3)


def test_replay_refuses_exactly_the_recording_options():
    assert set(NOT_FOR_REPLAY) == {
        "store", "every", "record_only", "resume", "overwrite", "store_trajectory", "val_data",
        "optimizer", "log_to", "log_every", "alerts", "on_alert", "arithmetic",
    }  # fmt: skip


stored = st.fixed_dictionaries(
    {
        "rule": st.sampled_from(["simpson", "auto", "trapezoid", "first_order"]),
        "tol": st.floats(1e-9, 1.0),
        "max_panels": st.integers(2, 64),
        "budget": st.floats(0.0, 1.0),
        "every": st.integers(1, 10),
        "per_class": st.booleans(),
        "record_only": st.booleans(),
        "store_params": st.booleans(),
        "store_grads": st.booleans(),
        "store_trajectory": st.booleans(),
    }
)


@given(stored)
def test_a_run_reads_back_the_options_it_stored(values):
    options = Options(**values)
    back = Options.from_config(options.config())
    for name in values:
        expected = getattr(options, name)
        if name == "store_trajectory":
            expected = options.store_trajectory or options.record_only
        assert getattr(back, name) == expected


@pytest.mark.parametrize(
    "name, value",
    [("budget", math.nan), ("tol", math.inf), ("tol", "1e-3"), ("every", 0), ("every", True),
     ("per_class", 1), ("rule", None), ("max_panels", 2.5)],
)  # fmt: skip
def test_a_stored_option_no_run_can_have_is_refused(name, value):
    with pytest.raises(ValueError, match=name):
        Options.from_config({name: value})


def test_a_run_knows_its_options(tmp_path):
    backend = FunctionBackend(cubic(0, 2), np.ones(2))
    tracker = Tracker(backend, tmp_path / "run", rule="auto", budget=0.05, every=2)
    tracker.update(np.ones(2), np.ones(2) * 0.9)
    tracker.update(None, np.ones(2) * 0.8)
    tracker.close()
    options = open_run(tmp_path / "run").options
    assert (options.rule, options.budget, options.every) == ("auto", 0.05, 2)


def test_every_opt_in_array_names_the_option_that_records_it():
    from lca_core import Layout, ParamSpec

    layout = Layout((ParamSpec("w", (3,), "float32", "l0", 0),))
    plain = {s.name for s in array_specs(layout)}
    everything = array_specs(
        layout, num_classes=3, validation=True, store_params=True, store_trajectory=True,
        store_grads=True, stderr=True,
    )  # fmt: skip
    opt_in = [s.name for s in everything if s.name not in plain]
    assert len(opt_in) >= 8
    for name in opt_in:
        assert recorded_by(name), name
    for name in plain:
        assert recorded_by(name) is None, name


class Minimal(Backend):
    """Only the required members: the optional capabilities come from the protocol."""

    num_classes = None
    splits = ("train",)

    def __init__(self):
        self.inner = FunctionBackend(cubic(1, 3), np.ones(3))
        self.layout = self.inner.layout

    @classmethod
    def accepts(cls, model, *args):
        return False

    def snapshot(self):
        return self.inner.snapshot()

    def evaluate(self, thetas, *, state=None, split="train", per_class=False):
        return self.inner.evaluate(thetas, state=state, split=split, per_class=per_class)

    def policy(self):
        return {}


def test_a_backend_with_only_the_required_members_gets_the_optional_ones_defaults():
    backend = Minimal()
    assert backend.subset is None and backend.writes and backend.from_writer(3) == 3
    result = Allocator(backend)
    result.start(np.ones(3))
    assert abs(result.advance(np.ones(3) * 0.9).residual) < 1e-9
    with pytest.raises(ValueError, match="eval_subset needs a backend"):
        Tracker(backend, eval_subset=0.5)


def test_an_object_that_is_not_a_backend_is_named_with_what_it_lacks():
    class Half:
        layout = None

        def evaluate(self, thetas):
            return []

    with pytest.raises(TypeError, match=r"lacks \['num_classes', 'splits'"):
        check_backend(Half())
    with pytest.raises(TypeError, match="not an lca backend"):
        Tracker(Half())


def test_importing_the_analyses_loads_no_plotting_library():
    code = "import sys, lca_core.analysis; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_figure_belongs_to_an_analysis():
    from lca_core.analysis import ANALYSES
    from lca_core.plot import FIGURES

    keys = {a.key for a in ANALYSES}
    assert FIGURES and set(FIGURES) <= keys
    assert sum(len(specs) for specs in FIGURES.values()) == 13
