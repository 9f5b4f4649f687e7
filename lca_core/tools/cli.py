"""The ``lca`` command: ``info``, ``demo``, ``replay``, ``analyze``, ``report``, ``export``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import runpy
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

from .._version import __version__
from ..backend_kit.plugins import available_backends, framework_installed
from ..errors import LCAError

MODULES = (
    "numpy",
    "zarr",
    "torch",
    "lightning",
    "transformers",
    "tensorflow",
    "keras",
    "jax",
    "flax",
    "optax",
    "ray",
)
#: KERAS_BACKEND each Keras-based backend runs on (set for the demo before keras loads)
KERAS_BACKENDS = {"tensorflow": "tensorflow", "keras-jax": "jax"}


def module_version(module: str) -> str | None:
    """Version of an importable module (found, not imported), whatever distribution
    provides it (``tensorflow`` comes from ``tensorflow-cpu`` too); None if absent."""
    if importlib.util.find_spec(module) is None:
        return None
    for dist in packages_distributions().get(module, [module]):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "installed"


def cmd_info(args: argparse.Namespace) -> int:
    """Versions, and which backends can run here (imports no framework)."""
    print(f"lca {__version__} (Python {platform.python_version()}, {platform.platform()})")
    print("backends:")
    for name, target in available_backends().items():
        state = "ready" if framework_installed(name) else "framework not installed"
        print(f"  {name:<12} {target:<40} {state}")
    print("frameworks:")
    for module in MODULES:
        print(f"  {module:<12} {module_version(module) or 'not installed'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the digits MLP with LCA on, in the chosen framework."""
    from . import demo

    if args.backend in KERAS_BACKENDS:
        os.environ["KERAS_BACKEND"] = KERAS_BACKENDS[args.backend]
    return demo.run(args)


def load_setup(spec: str) -> Any:
    """``FILE.py[:FUNCTION]`` (default function ``setup``) → what the function returns."""
    path, _, name = spec.partition(":")
    if not os.path.isfile(path):
        raise LCAError(f"--setup {spec!r}: no file {path!r}; give FILE.py[:FUNCTION]")
    namespace = runpy.run_path(path)
    fn = namespace.get(name or "setup")
    if not callable(fn):
        raise LCAError(f"--setup {spec!r}: {path} defines no function {name or 'setup'!r}")
    return fn()


def setup_backend(args: argparse.Namespace) -> Any:
    """The backend a ``--setup`` file describes: a ready one, or a tuple for ``--backend``."""
    from ..backend_kit.plugins import create_backend

    made = load_setup(args.setup)
    if not isinstance(made, tuple):
        return made
    backend_options = {"batch_size": args.batch_size} if args.batch_size else {}
    return create_backend(*made, backend=args.backend, **backend_options)


def cmd_estimate(args: argparse.Namespace) -> int:
    """Time gradient passes of a model/data pair and forecast what tracking would cost."""
    from .estimate import estimate

    result = estimate(
        setup_backend(args),
        steps=args.steps,
        eval_subset=args.eval_subset,
        train_step_seconds=args.train_step_seconds,
        target_ratio=args.target_ratio,
    )
    print(result.table())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Allocate the steps of a record-only run (resumable: rerun to continue)."""
    from ..replay import replay

    summary = replay(
        args.run,
        setup_backend(args),
        out=args.out,
        progress=not args.no_progress,
        rule=args.rule,
        tol=args.tol,
        per_class=args.per_class,
        store_params=args.store_params,
        executor=None if args.ray is None else "ray",
        workers=args.workers,
        address=args.ray or None,
    )
    print(summary)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Every analysis the run has data for, as a table; everything as JSON on request."""
    from ..analysis import analyze, format_analysis, to_jsonable
    from ..storage.outputs import check_output, write_text
    from ..storage.run import open_run

    target = check_output(args.json, force=args.force) if args.json else None
    results = analyze(open_run(args.run), seed=args.seed)
    print(format_analysis(results))
    if target is not None:
        write_text(target, json.dumps({"generator": "lca", **to_jsonable(results)}))
        print(f"\nall results written to {target}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Render the one-page HTML report of a run."""
    from .report import write_report

    output = args.output or str(Path(args.run).resolve().with_suffix(".html"))
    out = write_report(
        args.run,
        output,
        frames=args.frames,
        seed=args.seed,
        force=args.force,
        figures=args.figures,
    )
    print(f"report written to {out}")
    if args.figures:
        print(f"figures written to {args.figures}/ (PNG)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a recorded run's numbers into TensorBoard and/or MLflow."""
    from ..dashboards.export import to_mlflow, to_tensorboard
    from ..storage.run import open_run

    if not args.tensorboard and not args.mlflow:
        raise LCAError("lca export: say where to: --tensorboard DIR and/or --mlflow")
    run = open_run(args.run)
    if args.tensorboard:
        steps = to_tensorboard(run, args.tensorboard)
        print(f"{steps} steps written to TensorBoard in {args.tensorboard}")
    if args.mlflow:
        run_id = to_mlflow(
            run, tracking_uri=args.mlflow_uri, experiment=args.experiment, run_name=args.name
        )
        print(f"MLflow run {run_id} (experiment {args.experiment!r}) holds the run's steps")
    return 0


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard events in DIR")
    parser.add_argument("--mlflow", action="store_true", help="log the steps as an MLflow run")
    parser.add_argument(
        "--mlflow-uri", help="MLflow tracking URI (default: MLflow's own, MLFLOW_TRACKING_URI)"
    )
    parser.add_argument("--experiment", default="lca", help="MLflow experiment (made if new)")
    parser.add_argument("--name", help="MLflow run name (default: the run directory's name)")


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="HTML file to write (default: RUN.html, beside the run, as `lca demo` writes it)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the output even if lca did not write it"
    )
    parser.add_argument("--frames", type=int, default=24, help="frames of the animation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baselines")
    parser.add_argument(
        "--figures", metavar="DIR", help="also write every still figure as DIR/NAME.png"
    )


def _analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--json", metavar="FILE", help="write every result as JSON")
    parser.add_argument(
        "--force", action="store_true", help="replace the JSON file even if lca did not write it"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baselines")


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory recorded with record_only=True")
    parser.add_argument("--backend", required=True, help="backend name (see `lca info`)")
    parser.add_argument(
        "--setup",
        required=True,
        metavar="FILE.py[:FUNCTION]",
        help="a function (default `setup`) returning the backend's arguments, e.g. "
        "(model, loss_fn, data) for torch, or a ready backend",
    )
    parser.add_argument("--out", help="write the allocation to another run directory")
    parser.add_argument("--rule", default="simpson", help="quadrature rule")
    parser.add_argument("--tol", type=float, default=1e-3, help="per-step residual tolerance")
    parser.add_argument("--batch-size", type=int, help="examples per evaluation chunk")
    parser.add_argument("--per-class", action="store_true", help="also per-class LCA")
    parser.add_argument("--store-params", action="store_true", help="store per-parameter LCA")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="compute the steps as Ray tasks: on a local Ray, or on the cluster at ADDRESS "
        '(pip install "loss-change-allocation[ray]")',
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="Ray tasks at a time (with --ray; default 2)"
    )


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default="lca-runs/demo",
        help="run directory; an earlier run there is replaced when the new one is complete",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace OUT.html even if lca did not write it"
    )
    parser.add_argument("--backend", default="torch", help="torch, tensorflow, keras-jax or jax")
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--lr", type=float, default=None, help="default: 0.05 sgd, 1e-3 adam")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=24, help="frames of the report's animation")


def _estimate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", help="backend name (see `lca info`); default: detected")
    parser.add_argument(
        "--setup",
        required=True,
        help="FILE.py[:FUNCTION] returning a backend, or the arguments of --backend's "
        "constructor as a tuple (model, loss_fn, data) — as for `lca replay`",
    )
    parser.add_argument("--steps", type=int, help="optimizer steps to forecast for")
    parser.add_argument(
        "--eval-subset",
        type=_size,
        help="examples (or a fraction) per pass; also shows the resampled designs' cost",
    )
    parser.add_argument("--batch-size", type=int, help="examples per evaluation chunk")
    parser.add_argument(
        "--train-step-seconds",
        type=float,
        help="one training step's seconds: show each setting's ratio to training",
    )
    parser.add_argument(
        "--target-ratio",
        type=float,
        default=2.0,
        help="name the settings within this ratio to training (with --train-step-seconds)",
    )


def _size(text: str) -> int | float:
    return float(text) if "." in text else int(text)


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in ``--help`` (those that have one), epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


#: what ``--setup`` points at, shown in the help of the commands that take it
SETUP_EXAMPLE = """\
--setup names a Python file and a function in it (default `setup`) that builds the model
and its evaluation data; it returns the backend's arguments or a ready backend. E.g.
`lca replay runs/rec --backend torch --setup setup.py` with setup.py:

    import torch
    from sklearn.datasets import load_digits

    def setup():
        x, y = load_digits(return_X_y=True)
        model = torch.nn.Sequential(torch.nn.Linear(64, 100), torch.nn.ReLU(),
                                    torch.nn.Linear(100, 10))
        data = (torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y))
        return model, torch.nn.CrossEntropyLoss(), data   # TorchBackend's arguments
"""


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
        "replay": (
            "allocate a record-only run's steps later, with any backend (resumable)",
            cmd_replay,
            _replay_arguments,
        ),
        "estimate": (
            "forecast what tracking a model would cost, from timed gradient passes",
            cmd_estimate,
            _estimate_arguments,
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
        "export": (
            "write a recorded run's per-step numbers into TensorBoard or MLflow",
            cmd_export,
            _export_arguments,
        ),
    }
    for name, (help_text, fn, add_arguments) in commands.items():
        command = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=_Help,
            epilog=SETUP_EXAMPLE if name in ("replay", "estimate") else None,
        )
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
