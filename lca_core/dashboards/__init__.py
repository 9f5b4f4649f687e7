"""LCA in the dashboards people already watch (``log_to=``), with alerts
(``alerts=``, ``on_alert=``), and ``lca export`` for a recorded run.

The names are one table (docs/api.md): ``lca/loss_change``, ``lca/sum_lca``,
``lca/residual``, ``lca/budget_used``, ``lca/pct_helped``, ``lca/layer/<layer>``, with
subsets ``lca/layer_stderr/<layer>``, with validation ``lca/val/layer/<layer>``, with
optimizer parts ``lca/<part>/layer/<layer>``.
"""

from .alerts import Alert, Alerts
from .dashboard import Dashboard
from .metrics import EpochSums, Metrics, layer_tag
from .sinks import Sink, log_targets, sink_for

__all__ = [
    "Alert",
    "Alerts",
    "Dashboard",
    "EpochSums",
    "Metrics",
    "Sink",
    "layer_tag",
    "log_targets",
    "sink_for",
]
