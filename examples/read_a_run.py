"""Read a run without any deep-learning framework: the summary, the analyses, a figure,
the report. Needs only `pip install loss-change-allocation`.

    python examples/read_a_run.py RUN [--report report.html]
"""

import argparse

from lca_core import open_run
from lca_core.analysis import analyze, format_analysis, helping_fractions, layer_totals
from lca_core.plot import plot_layer_totals
from lca_core.tools.report import write_report

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("run", help="a run directory (e.g. from `lca demo` or another example)")
parser.add_argument("--report", help="also write the HTML report here")
args = parser.parse_args()

run = open_run(args.run)  # validated; never trusts what is on disk
print(run.summary())
print(
    f"\nlayers: {run.layers}; per-step arrays: losses {run.losses.shape}, "
    f"layer_lca {run.layer_lca.shape}"
)
print(f"helped overall: {helping_fractions(run).overall['helped']:.1f} %")
print(
    {name: round(float(v), 4) for name, v in zip(run.layers, layer_totals(run).totals, strict=True)}
)
print()
print(format_analysis(analyze(run)))  # every analysis the run has data for
figure = plot_layer_totals(run)
figure.savefig(f"{args.run}-layer-totals.png", dpi=90)
print(f"\nfigure: {args.run}-layer-totals.png")
if args.report:
    print(f"report: {write_report(args.run, args.report, progress=False)}")
