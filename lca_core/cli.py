"""The ``lca`` command: ``info``, ``demo``, ``analyze``, ``report``."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import __version__
from .errors import LCAError
from .registry import available_backends, load_backend

FRAMEWORKS = ("numpy", "zarr", "torch", "lightning", "tensorflow", "keras", "jax", "flax", "optax")


def _installed_version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def cmd_info(args: argparse.Namespace) -> int:
    """Versions and installed backends, read from package metadata (imports no framework)."""
    print(f"lca {__version__} (Python {platform.python_version()}, {platform.platform()})")
    print("backends:")
    for name, target in available_backends().items():
        print(f"  {name:<12} {target}")
    print("frameworks:")
    for dist in FRAMEWORKS:
        print(f"  {dist:<12} {_installed_version(dist) or 'not installed'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a small network with LCA on, using the chosen backend's demo module."""
    backend = load_backend(args.backend)
    package = backend.__module__.split(".")[0]
    try:
        demo = importlib.import_module(f"{package}.demo")
    except ModuleNotFoundError as exc:
        raise LCAError(f"the {args.backend!r} backend ships no demo ({exc})") from exc
    return int(demo.run(args))


def cmd_analyze(args: argparse.Namespace) -> int:
    """Every analysis the run has data for, as a table; everything as JSON on request."""
    from .analysis import analyze, to_jsonable
    from .analysis.text import format_analysis
    from .run import open_run

    results = analyze(open_run(args.run), seed=args.seed)
    print(format_analysis(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_jsonable(results), f)
        print(f"\nall results written to {args.json}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Render the one-page HTML report of a run."""
    from .report import write_report

    out = write_report(args.run, args.output, frames=args.frames, seed=args.seed)
    print(f"report written to {out}")
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("-o", "--output", default="report.html", help="HTML file to write")
    parser.add_argument("--frames", type=int, default=24, help="frames of the animation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baselines")


def _analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--json", metavar="FILE", help="write every result as JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baselines")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="lca-runs/demo", help="run directory (replaced)")
    parser.add_argument("--backend", default="torch", help="backend to train with")
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--lr", type=float, default=None, help="default: 0.05 sgd, 1e-3 adam")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=24, help="frames of the report's animation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lca", description="Loss Change Allocation: which parameters made a network learn."
    )
    parser.add_argument("--version", action="version", version=f"lca {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[str, Callable[[argparse.Namespace], int], Any]] = {
        "info": ("show the version, installed backends and frameworks", cmd_info, None),
        "demo": (
            "train an MLP on bundled digits with LCA and print the summary",
            cmd_demo,
            _demo_arguments,
        ),
        "analyze": (
            "the paper's analyses of a run: a table, and JSON on request",
            cmd_analyze,
            _analyze_arguments,
        ),
        "report": (
            "write a self-contained HTML report of a run (figures, summary, captions)",
            cmd_report,
            _report_arguments,
        ),
    }
    for name, (help_text, fn, add_arguments) in commands.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if add_arguments is not None:
            add_arguments(command)
        command.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (LCAError, FileExistsError) as exc:
        print(f"lca: error: {exc}", file=sys.stderr)
        return 2
