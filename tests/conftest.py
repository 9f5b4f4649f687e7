"""Test-wide settings: a bounded hypothesis profile for CI, no GUI for matplotlib, W&B
offline."""

import os
import tempfile

from hypothesis import HealthCheck, settings

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="lca-mpl-"))
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="lca-keras-"))
# W&B, wherever a test starts a run: offline (nothing leaves the machine), quiet, and its
# files in a temporary directory rather than the working one
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp(prefix="lca-wandb-"))

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
