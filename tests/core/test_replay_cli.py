"""`lca replay`: a record-only run allocated later from the command line, resumable."""

import itertools

import numpy as np

from lca_core import FunctionBackend, Tracker, open_run
from lca_core.backend_kit.numpy_models import MLP
from lca_core.tools.cli import main
from tests.core.models import digits_like, sgd

SETUP = """
from lca_core import FunctionBackend
from lca_core.backend_kit.numpy_models import MLP
from tests.core.models import digits_like


def setup():
    x, y = digits_like(5, n=120)
    mlp = MLP((16, 10, 4), activation="relu")
    return FunctionBackend(mlp.loss_and_grad, mlp.init(3), data=(x, y), layout=mlp.layout)
"""


def test_lca_replay_allocates_a_recorded_run_like_an_online_one(tmp_path, capsys):
    x, y = digits_like(5, n=120)
    mlp = MLP((16, 10, 4), activation="relu")
    traj = sgd(mlp.loss_and_grad, mlp.init(3), 0.4, 6, x, y)

    def tracked(store, **options):
        backend = FunctionBackend(mlp.loss_and_grad, traj[0], data=(x, y), layout=mlp.layout)
        tracker = Tracker(backend, store, **options)
        for before, after in itertools.pairwise(traj):
            tracker.update(before, after)
        return tracker.close()

    tracked(tmp_path / "online")
    tracked(tmp_path / "rec", record_only=True)
    setup = tmp_path / "setup.py"
    setup.write_text(SETUP)
    argv = ["replay", str(tmp_path / "rec"), "--backend", "function", "--no-progress"]
    assert main([*argv, "--setup", f"{setup}:setup"]) == 0
    assert "budget used" in capsys.readouterr().out
    online, replayed = open_run(tmp_path / "online"), open_run(tmp_path / "rec")
    assert replayed.steps == 6
    np.testing.assert_allclose(replayed.layer_lca, online.layer_lca, rtol=1e-12)
    # a second call finds nothing left to do and changes nothing
    assert main([*argv, "--setup", f"{setup}:setup"]) == 0
    np.testing.assert_array_equal(open_run(tmp_path / "rec").layer_lca, replayed.layer_lca)


def test_lca_replay_explains_a_bad_setup(tmp_path, capsys):
    argv = ["replay", str(tmp_path), "--backend", "function", "--setup"]
    assert main([*argv, str(tmp_path / "missing.py")]) == 2
    assert "no file" in capsys.readouterr().err
    (tmp_path / "s.py").write_text("x = 1\n")
    assert main([*argv, f"{tmp_path / 's.py'}:make"]) == 2
    assert "defines no function 'make'" in capsys.readouterr().err
