"""Benchmark runner: `python benchmarks/run.py [--quick] [core] [torch]` (`gpu` only when named)."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "rules": "bench_rules:run_rules",
    "subsets": "bench_rules:run_subsets",
    "subset_memory": "bench_rules:run_subset_memory",
    "core": "bench_core",
    "torch": "bench_torch",
    "parts": "bench_parts",
    "dashboards": "bench_dashboards",
    "leave_on": "bench_leave_on",
    "jax": "bench_jax",
    "tensorflow": "bench_tensorflow",
    "memory": "bench_scale:run_memory",
    "ddp": "bench_scale:run_ddp",
    "replay": "bench_scale:run_replay",
    "large": "bench_large",
    "gpu": "bench_gpu",
}
#: what a run without names measures: everything but the benchmark that needs a GPU
DEFAULT = [name for name in BENCHMARKS if name != "gpu"]


def markdown(title: str, header: list[str], rows: list[list[str]], notes: str) -> str:
    lines = [
        f"## {title}",
        "",
        f"_{time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · "
        f"Python {platform.python_version()}_",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join([*lines, "", notes, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=DEFAULT, choices=list(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    (HERE / "results").mkdir(exist_ok=True)
    for name in args.names:
        module_name, _, function = BENCHMARKS[name].partition(":")
        module = importlib.import_module(module_name)
        title, header, rows, notes = getattr(module, function or "run")(quick=args.quick)
        text = markdown(title, header, rows, notes)
        print(text)
        (HERE / "results" / f"{name}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
