"""Reading dashboards back with their own libraries, and the numbers they should hold.

The expected values are a run's stored arrays (``lca_core.dashboards.export.run_metrics``
reads them), so a test compares what reached the dashboard with what reached the store.
"""

from __future__ import annotations

import glob
import os
import struct
import time
from collections import defaultdict
from typing import Any

import numpy as np

from lca_core import open_run
from lca_core.dashboards.export import run_metrics


def expected(store: Any) -> dict[str, list[tuple[int, float]]]:
    """Tag → [(optimizer step, value)] of every allocated step of the run in ``store``."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for step, values in run_metrics(open_run(store)):
        for tag, value in values.items():
            out[tag].append((step, value))
    return dict(out)


def assert_same(got: dict[str, list[tuple[int, float]]], want: dict, *, rtol: float = 0) -> None:
    """The same tags, each with the same steps and values (``rtol``: float32 dashboards)."""
    assert set(got) == set(want), set(got) ^ set(want)
    for tag, points in want.items():
        steps, values = zip(*sorted(got[tag]), strict=True)
        want_steps, want_values = zip(*points, strict=True)
        assert steps == want_steps, tag
        np.testing.assert_allclose(values, want_values, rtol=rtol, atol=0, err_msg=tag)


def as_float32(want: dict) -> dict:
    """What a float32 dashboard (TensorBoard) holds of ``want``'s values."""
    return {tag: [(s, float(np.float32(v))) for s, v in points] for tag, points in want.items()}


def tensorboard_scalars(logdir: Any, prefix: str = "lca/") -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``prefix`` in a TensorBoard log directory, by TensorBoard's own
    reader (tensor summaries, as ``tf.summary`` writes them, included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.fspath(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    out = {
        tag: [(e.step, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
        if tag.startswith(prefix)
    }
    from tensorboard.util.tensor_util import make_ndarray

    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        if tag.startswith(prefix) and events and events[0].tensor_proto.dtype == 1:  # float
            out[tag] = [(e.step, float(make_ndarray(e.tensor_proto))) for e in events]
    return out


def tensorboard_texts(logdir: Any, tag: str = "lca/alerts") -> list[str]:
    """The text events under ``tag`` (torch's writer adds ``/text_summary`` to it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.fspath(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return [
        e.tensor_proto.string_val[0].decode()
        for name in acc.Tags()["tensors"]
        if name.startswith(tag)
        for e in acc.Tensors(name)
    ]


def mlflow_metrics(client: Any, run_id: str, prefix: str = "lca/") -> dict:
    """Every metric under ``prefix`` of an MLflow run, from its tracking store."""
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith(prefix)]
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in keys}


def wandb_records(directory: Any, timeout: float = 60.0) -> list[Any]:
    """The records of the W&B offline run in ``directory`` (the run's own, or one with a
    ``wandb/offline-run-*`` in it), once W&B has written its last (``exit``): W&B's
    service writes the run's file behind ``run.finish()``, so a busy machine may read it
    early. The file, ``run-<id>.wandb``, is a LevelDB-format log of W&B's own protobuf
    records, parsed with W&B's classes; W&B has no reader of local runs
    (wandb/wandb#1308), so the framing is read here."""
    where = os.fspath(directory)
    (path,) = glob.glob(os.path.join(where, "*.wandb")) or glob.glob(
        os.path.join(where, "wandb", "offline-run-*", "*.wandb")
    )
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_log(path)
        kinds = {r.WhichOneof("record_type") for r in records}
        if "exit" in kinds or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _wandb_log(path: str) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):  # being written: read again later
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(directory: Any, prefix: str = "lca/", step: str = "lca/step") -> dict:
    """Every logged ``prefix`` metric of the offline run, against the metric ``step``."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in wandb_records(directory):
        if record.WhichOneof("record_type") != "history":
            continue
        items = {"/".join(i.nested_key) or i.key: i.value_json for i in record.history.item}
        row = {tag: float(v) for tag, v in items.items() if tag.startswith(prefix)}
        row.pop("lca/step", None)
        if not row:  # the user's own logging
            continue
        for tag, value in row.items():
            out[tag].append((int(items[step]), value))
    return dict(out)


def wandb_alerts(directory: Any) -> list[str]:
    return [
        r.alert.text for r in wandb_records(directory) if r.WhichOneof("record_type") == "alert"
    ]
