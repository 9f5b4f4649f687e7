import importlib.util
import os
import subprocess
import sys
import warnings
from importlib.metadata import EntryPoint

import numpy as np
import pytest

import lca_core.backend_kit.plugins as registry
from lca_core import (
    FunctionBackend,
    UnknownBackendError,
    available_backends,
    create_backend,
    load_backend,
)
from lca_core.backend_kit.plugins import framework_installed
from lca_core.tools.cli import main
from tests.core.models import cubic

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax")


def test_importing_the_core_and_listing_backends_imports_no_framework():
    code = (
        "import sys, lca_core; names = lca_core.available_backends(); "
        f"print(sorted(set(sys.modules) & set({FRAMEWORKS!r})), 'function' in names)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True"]


def test_unknown_backend_lists_the_installed_ones():
    with pytest.raises(UnknownBackendError, match=r"installed: \[.*'function'"):
        load_backend("mxnet")


def fake_entry_points(extra):
    real = registry._entry_points()

    def patched():
        return {**real, **{ep.name: ep for ep in extra}}

    return patched


def test_a_broken_plugin_is_a_warning_naming_it(monkeypatch):
    broken = EntryPoint("json", "lca_no_such_module:Backend", registry.GROUP)
    monkeypatch.setattr(registry, "_entry_points", fake_entry_points([broken]))
    with pytest.warns(RuntimeWarning, match="'json'.*lca_no_such_module"):
        backend = create_backend(cubic(0, 2), np.ones(2))  # json is imported: it is tried
    assert isinstance(backend, FunctionBackend)
    with pytest.raises(Exception, match="failed to load"):
        load_backend("json")


def test_explicit_backend_wins(monkeypatch):
    class Recorder(FunctionBackend):
        pass

    fn = cubic(0, 2)
    assert type(create_backend(fn, np.ones(2), backend=Recorder)) is Recorder
    ready = FunctionBackend(fn, np.ones(2))
    assert create_backend(object(), backend=ready) is ready
    assert type(create_backend(fn, np.ones(2), backend="function")) is FunctionBackend
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UnknownBackendError, match="no installed lca backend accepts"):
            create_backend(object())


def test_lca_info_lists_backends_and_frameworks(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "function" in out and "lca_core.backend_kit.function_backend:FunctionBackend" in out
    assert set(available_backends()) <= set(out.split())
    assert "numpy" in out and "frameworks:" in out
    # frameworks are told by import, whichever distribution installed them (the backends'
    # lines: the frameworks' own, below, give versions where installed)
    backends, frameworks = out.split("frameworks:")
    for line in backends.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in available_backends():
            expected = "ready" if framework_installed(words[0]) else "not installed"
            assert line.endswith(expected), line
    assert "function" in backends and "numpy" in frameworks


def test_module_versions_come_from_whichever_distribution_provides_them(monkeypatch):
    from importlib.metadata import version

    from lca_core.tools import cli

    assert cli.module_version("numpy") == version("numpy")
    assert cli.module_version("no_such_module_here") is None
    # tensorflow-cpu installs the module `tensorflow`: the version is found through it
    monkeypatch.setattr(cli, "packages_distributions", lambda: {"numpy": ["not-a-dist", "numpy"]})
    assert cli.module_version("numpy") == version("numpy")


def test_two_plugins_with_one_name_are_a_warning(monkeypatch):
    eps = [
        EntryPoint("dup", "pkg_a:Backend", registry.GROUP),
        EntryPoint("dup", "pkg_b:Backend", registry.GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    with pytest.warns(RuntimeWarning, match="two lca backends are named 'dup'"):
        assert available_backends() == {"dup": "pkg_a:Backend"}


@pytest.mark.skipif(
    os.environ.get("LCA_TOX_ENV") != "core", reason="checks the tox `core` environment itself"
)
def test_the_core_environment_has_no_framework_installed():
    present = [name for name in FRAMEWORKS if importlib.util.find_spec(name) is not None]
    assert present == [], f"the core env must prove lca_core works alone; found {present}"
