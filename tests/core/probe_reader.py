"""Read a run as a user would, under memory and time limits; print the outcome.

``python tests/core/probe_reader.py RUN [--report]`` prints ``OK`` or ``LCA <ErrorClass>``
and exits 0; any other exception exits 3 with its traceback, a crash dies by a signal.
The reliability tests run it in a subprocess on damaged and hostile stores.
"""

import resource
import sys

MEMORY_LIMIT = 3 * 2**30
resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

from lca_core import LCAError, open_run  # noqa: E402
from lca_core.analysis import analyze, format_analysis  # noqa: E402


def read_everything(path: str, report: bool) -> None:
    run = open_run(path)
    run.summary()
    format_analysis(analyze(run))
    for name in ("param_lca", "grads", "theta", "class_layer_lca", "val_layer_lca"):
        if run.has(name):
            for _ in run.iter_array(name):
                pass
    if report:
        from lca_core.tools.report import render_report

        render_report(run, frames=2, progress=False)


if __name__ == "__main__":
    try:
        read_everything(sys.argv[1], "--report" in sys.argv)
    except LCAError as exc:
        print(f"LCA {type(exc).__name__}: {exc}")
    else:
        print("OK")
