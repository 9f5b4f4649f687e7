"""`lca demo` is one experiment in every framework: same weights, same batches, same layout,
so the runs agree to float32 precision."""

import importlib.util

import numpy as np
import pytest

from lca_core import open_run
from lca_core.tools.cli import main

BACKENDS = [b for b in ("torch", "tensorflow", "jax") if importlib.util.find_spec(b)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_demo_gives_the_same_run_in_every_framework(tmp_path, optimizer, capsys):
    runs = {}
    for backend in BACKENDS:
        out = tmp_path / backend
        argv = ["demo", "--backend", backend, "--out", str(out), "--steps", "6", "--frames", "2"]
        assert main([*argv, "--optimizer", optimizer]) == 0
        runs[backend] = open_run(out)
        assert f"LCA of 6 steps ({backend})" in capsys.readouterr().out
    assert len(runs) == 3, "the `all` environment installs every framework"
    first = runs["torch"]
    for backend, run in runs.items():
        assert run.layers == ["fc1", "fc2", "fc3"], backend
        assert sorted(run._group.array_keys()) == sorted(first._group.array_keys()), backend
        np.testing.assert_allclose(run.losses, first.losses, rtol=2e-5, err_msg=backend)
        np.testing.assert_allclose(
            run.layer_lca, first.layer_lca, rtol=2e-3, atol=2e-6, err_msg=backend
        )
