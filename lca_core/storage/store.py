"""The run store: one zarr v3 directory per run, written as training goes, read back anywhere.

Arrays grow along their first axis, one row per step (``step`` arrays, T rows) or per point
θ_0…θ_T (``point`` arrays, T+1 rows). Rows are buffered and written by whole chunks; the
number of committed rows lives in the group attribute ``lca_commit``, replaced atomically
(zarr's local store writes metadata by rename) only after the data
it counts is on disk. A run killed at any moment therefore reopens at its last whole step,
and appending resumes there. Metadata is JSON; arrays are plain numeric — no pickles.

Format 2 adds a crc32c checksum to every chunk (corruption is found before a decompressor
sees the bytes) and writes every chunk, even an all-zero one, so a missing chunk inside the
committed rows is damage, not zeros. One process writes a run (:class:`~.lock.WriterLock`);
replacing a run deletes only the files lca wrote there.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from ..errors import (
    CorruptRunError,
    FormatVersionError,
    LayoutMismatchError,
    NotARunError,
    RunExistsError,
)
from ..layout import Layout, common_dtype
from .lock import LCA_FILES, WriterLock

FORMAT = "lca-run"
FORMAT_VERSION = 2
#: format versions this lca reads (1: no checksums, all-zero chunks may be absent)
READABLE_VERSIONS = (1, 2)
COMMIT_KEY = "lca_commit"
#: target bytes of one chunk of the widest array; bounds the writer's memory
CHUNK_BYTES = 32 * 2**20
MAX_CHUNK_STEPS = 256
MAX_CHUNK_COLS = 2**22
#: arrays with a row per point θ_0…θ_T; every other array has a row per step
POINT_ARRAYS = frozenset({"losses", "class_losses", "val_losses", "grads", "theta"})
WIDE_ROW_BYTES = 4096
WIDE_CODEC = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
CHECKSUM = Crc32cCodec()


@dataclass(frozen=True)
class ArraySpec:
    """One stored array: its row kind, stream (commit counter), dtype and row shape."""

    name: str
    row_shape: tuple[int, ...]
    dtype: str
    stream: str = "lca"  # "lca" (allocation results) or "trajectory" (recorded θ_t)

    @property
    def point(self) -> bool:
        """T+1 rows (one per θ_t) instead of T (one per step)."""
        return self.name in POINT_ARRAYS

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def trajectory_dtype(layout: Layout) -> str:
    """θ is stored in the parameters' own dtype (float64 when they differ: exact for all)."""
    return common_dtype(p.dtype for p in layout.params).name


def array_specs(
    layout: Layout,
    *,
    num_classes: int | None = None,
    validation: bool = False,
    store_params: bool = False,
    store_trajectory: bool = False,
    store_grads: bool = False,
    stderr: bool = False,
    shared: bool = False,
    lca: bool = True,
    parts: int = 0,
) -> list[ArraySpec]:
    """The arrays a run holds for the chosen options (DESIGN §3); ``parts``: how many
    optimizer parts each step's LCA is split into (``optimizer=``; DESIGN §13)."""
    n_layers, k = len(layout.layers), layout.size
    specs: list[ArraySpec] = []
    if lca:
        specs += [
            ArraySpec("losses", (), "float64"),
            ArraySpec("step_index", (), "int64"),
            ArraySpec("residuals", (), "float64"),
            ArraySpec("drift", (), "float64"),
            ArraySpec("panels", (), "int32"),
            ArraySpec("converged", (), "bool"),
            ArraySpec("layer_lca", (n_layers,), "float64"),
            ArraySpec("layer_counts", (n_layers, 3), "int64"),
        ]
        if store_params:
            specs.append(ArraySpec("param_lca", (k,), "float32"))
        if stderr:
            specs.append(ArraySpec("layer_lca_stderr", (n_layers,), "float64"))
            specs.append(ArraySpec("lca_stderr", (), "float64"))
        if shared:
            specs.append(ArraySpec("layer_lca_cov_prev", (n_layers,), "float64"))
            specs.append(ArraySpec("lca_cov_prev", (), "float64"))
        if num_classes:
            specs += [
                ArraySpec("class_losses", (num_classes,), "float64"),
                ArraySpec("class_layer_lca", (num_classes, n_layers), "float64"),
            ]
        if validation:
            specs += [
                ArraySpec("val_losses", (), "float64"),
                ArraySpec("val_layer_lca", (n_layers,), "float64"),
                ArraySpec("val_residuals", (), "float64"),
            ]
        if store_grads:
            specs.append(ArraySpec("grads", (k,), "float32"))
        if parts:
            specs.append(ArraySpec("part_layer_lca", (parts, n_layers), "float64"))
            if stderr:
                specs.append(ArraySpec("part_layer_lca_stderr", (parts, n_layers), "float64"))
            if validation:
                specs.append(ArraySpec("val_part_layer_lca", (parts, n_layers), "float64"))
            if store_params:
                specs.append(ArraySpec("part_lca", (parts, k), "float32"))
    if store_trajectory:
        specs.append(ArraySpec("theta", (k,), trajectory_dtype(layout), stream="trajectory"))
    return specs


def shared_design(config: Mapping[str, Any]) -> bool:
    """Whether a run's (stored, untrusted) config says its subsets were resampled with
    shared ends, whose steps store their covariance with the step before."""
    subset = config.get("eval_subset")
    return isinstance(subset, Mapping) and subset.get("resample") == "shared"


#: the option a run is recorded with to hold each opt-in array (by name prefix: the
#: per-class arrays are ``class_…``, the validation ones ``val_…``)
RECORDED_BY = {
    "part_lca": "optimizer=... and store_params=True",
    "part_": "optimizer=... (the training's optimizer)",
    "val_part_": "optimizer=... and val_data=(inputs, targets)",
    "param_lca": "store_params=True",
    "grads": "store_grads=True",
    "theta": "store_trajectory=True (or record_only=True)",
    "class_": "per_class=True",
    "val_": "val_data=(inputs, targets)",
    "layer_lca_stderr": "eval_subset=n",
    "lca_stderr": "eval_subset=n",
    "layer_lca_cov_prev": "eval_subset=n, resample=True",
    "lca_cov_prev": "eval_subset=n, resample=True",
}


def recorded_by(name: str) -> str | None:
    """The option that makes a run store the array ``name`` (None: every run has it)."""
    return next((how for prefix, how in RECORDED_BY.items() if name.startswith(prefix)), None)


def read_commit(group: zarr.Group) -> dict[str, int]:
    return {k: int(v) for k, v in dict(group.attrs.get(COMMIT_KEY, {})).items()}


def write_commit(group: zarr.Group, counters: Mapping[str, int]) -> None:
    # zarr's local store replaces zarr.json atomically, so a kill leaves old or new counters
    group.update_attributes({COMMIT_KEY: dict(counters)})


def _array_names(path: Path) -> set[str]:
    """The arrays of the run in ``path``: its subdirectories that are zarr arrays (read
    from the file system: zarr's own listing warns about lca's lock files)."""
    return {
        e.name
        for e in os.scandir(path)
        if e.is_dir(follow_symlinks=False) and (Path(e.path) / "zarr.json").is_file()
    }


def is_run(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds an lca run (a readable one or not)."""
    try:
        open_group(Path(path), "r")
    except (NotARunError, FormatVersionError):
        return False
    except Exception:  # a damaged group is still a run lca wrote: never someone else's
        return (Path(path) / "zarr.json").is_file()
    return True


def require_group_file(path: Path) -> None:
    if not (path / "zarr.json").is_file():
        raise NotARunError(
            f"{path} is not an lca run (no zarr.json there); pass the directory a Tracker, "
            "callback or `lca demo --out` wrote"
        )


def run_meta(path: Path, attributes: Any) -> tuple[dict[str, Any], int]:
    """The lca attributes of a run's group and its format version, checked: an lca run
    of a format this lca reads."""
    meta = attributes.get("lca") if isinstance(attributes, Mapping) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NotARunError(
            f"{path} is a zarr group but not an lca run (no 'lca' attributes); open a "
            "directory written by lca, or record one with a Tracker"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptRunError(f"{path / 'zarr.json'}: the format version is {version!r}")
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{path} was written in run format {version}, newer than this lca reads "
            f"({FORMAT_VERSION}); upgrade with `pip install -U loss-change-allocation`"
        )
    return meta, version


def open_group(path: Path, mode: str) -> tuple[zarr.Group, dict[str, Any]]:
    """Open a run's group and check it is an lca run of a format we can read."""
    require_group_file(path)
    group = zarr.open_group(str(path), mode=mode)
    meta, _ = run_meta(path, dict(group.attrs))
    return group, meta


class RunWriter:
    """Appends rows to a run store, buffered by whole chunks, committing atomically.

    ``mode="w"`` creates a new run (refusing to overwrite a non-empty directory unless
    ``overwrite=True``); ``mode="a"`` reopens one and continues after its last committed row.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        layout: Layout,
        specs: list[ArraySpec],
        *,
        attrs: Mapping[str, Any] | None = None,
        mode: str = "w",
        overwrite: bool = False,
        flush_seconds: float = 30.0,
    ) -> None:
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' (new run) or 'a' (append), not {mode!r}")
        self.path = Path(path)
        self.layout = layout
        self.flush_seconds = flush_seconds
        widest = max((s.row_bytes for s in specs), default=8)
        self.chunk_steps = int(np.clip(CHUNK_BYTES // max(widest, 1), 1, MAX_CHUNK_STEPS))
        self._lock = WriterLock(self.path)  # before looking: no one else changes it now
        try:
            if mode == "w":
                self._create(specs, attrs or {}, overwrite)
            else:
                self._reopen(specs, attrs or {})
        except BaseException:
            self._lock.release()
            raise
        self.specs = {s.name: s for s in specs}
        self._pending: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
        # first row each array's pending buffer will be written at
        self._start = {s.name: self._valid_rows(s) for s in specs}
        self._uncommitted: dict[str, int] = {}
        self._last_flush = time.monotonic()

    # -- creation and reopening -------------------------------------------------------
    def _create(self, specs: list[ArraySpec], attrs: Mapping[str, Any], overwrite: bool) -> None:
        others = [e.name for e in os.scandir(self.path) if e.name not in LCA_FILES]
        if others and not is_run(self.path):
            raise RunExistsError(
                f"{self.path} holds files that are not an lca run ({', '.join(sorted(others)[:3])}"
                f"{', …' if len(others) > 3 else ''}); lca never deletes what it did not write. "
                "Choose a new or empty directory for the run."
            )
        if others and not overwrite:
            raise RunExistsError(
                f"{self.path} already holds an lca run; pass overwrite=True to replace it, "
                "resume=True to continue it, or choose a new directory"
            )
        if others:
            self._delete_run()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "layout": self.layout.to_list(),
            "layers": list(self.layout.layers),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **attrs,
        }
        self.counters = {"lca": 0, "trajectory": 0, "lca_started": 0, "trajectory_started": 0}
        # the group is born with its lca attributes: no reader ever sees a half-made run
        self.group = zarr.create_group(
            store=str(self.path), attributes={"lca": meta, COMMIT_KEY: self.counters}
        )
        for s in specs:
            self._create_array(s)

    def _delete_run(self) -> None:
        """Remove the run in ``self.path``: its arrays and its group, nothing else (the
        arrays first, so a kill midway leaves a run with fewer arrays, never a stray one)."""
        for name in _array_names(self.path):
            shutil.rmtree(self.path / name)
        (self.path / "zarr.json").unlink()

    def _create_array(self, s: ArraySpec) -> None:
        cols = tuple(min(d, MAX_CHUNK_COLS) for d in s.row_shape)
        self.group.create_array(
            s.name,
            shape=(0, *s.row_shape),
            chunks=(self.chunk_steps, *cols),
            dtype=s.dtype,
            fill_value=False if s.dtype == "bool" else 0,
            # per-parameter rows are large: lz4 + byte shuffle is about twice as fast as
            # zarr's default zstd at nearly the same size
            compressors=[
                WIDE_CODEC if s.row_bytes > WIDE_ROW_BYTES else ZstdCodec(),
                CHECKSUM,  # last: verified before any decompressor reads the chunk
            ],
        )

    def _reopen(self, specs: list[ArraySpec], attrs: Mapping[str, Any]) -> None:
        self.group, meta = open_group(self.path, "r+")
        stored = Layout.from_list(meta["layout"])
        if stored != self.layout:
            raise LayoutMismatchError(
                f"{self.path} was written for a different parameter layout "
                f"({stored.size} values in {len(stored.params)} parameters; now "
                f"{self.layout.size} in {len(self.layout.params)}); resume only the same model"
            )
        self.group.attrs["lca"] = {**meta, **attrs}
        self.counters = read_commit(self.group)
        existing = _array_names(self.path)
        for s in specs:
            if s.name not in existing:
                self._create_array(s)

    def _valid_rows(self, s: ArraySpec) -> int:
        n = self.counters[s.stream]
        return n + 1 if s.point and self.counters[f"{s.stream}_started"] else n

    # -- writing ----------------------------------------------------------------------
    def start(self, stream: str, point_row: Mapping[str, np.ndarray]) -> None:
        """Write the row of θ_n (n = steps committed so far) that a stream starts from."""
        n = self.counters[stream]
        for name, value in point_row.items():
            spec = self.specs[name]
            if not spec.point or spec.stream != stream:
                raise ValueError(f"{name} is not a point array of stream {stream!r}")
            self._pending[name] = [np.asarray(value, dtype=spec.dtype)]
            self._start[name] = n
        self.counters[f"{stream}_started"] = 1
        self.flush()

    def append(
        self,
        stream: str,
        step_row: Mapping[str, np.ndarray],
        point_row: Mapping[str, np.ndarray],
    ) -> None:
        """Add one step: its step-array rows and the point rows of θ_{t+1}."""
        for rows in (step_row, point_row):
            for name, value in rows.items():
                spec = self.specs[name]
                arr = np.asarray(value, dtype=spec.dtype)
                if arr.shape != spec.row_shape:
                    raise LayoutMismatchError(
                        f"row for {name} has shape {arr.shape}, the run stores {spec.row_shape}"
                    )
                self._pending[name].append(arr)
        self._uncommitted[stream] = self._uncommitted.get(stream, 0) + 1
        full = any(len(v) >= self.chunk_steps for v in self._pending.values())
        if full or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows, then record them as committed (atomically)."""
        # every chunk is written, even an all-zero one (arrays reopened by name do not keep
        # the creation-time setting): a missing chunk then always means damage
        with zarr.config.set({"array.write_empty_chunks": True}):
            for name, rows in self._pending.items():
                if not rows:
                    continue
                start = self._start[name]
                arr = self.group[name]
                stop = start + len(rows)
                if arr.shape[0] != stop:
                    arr.resize((stop, *arr.shape[1:]))
                arr[start:stop] = np.stack(rows)
                self._start[name] = stop
                self._pending[name] = []
        for stream, n in self._uncommitted.items():
            self.counters[stream] += n
        self._uncommitted = {}
        write_commit(self.group, self.counters)
        self._last_flush = time.monotonic()

    def committed(self, name: str) -> np.ndarray:
        """The rows of an array committed when the run was opened (what a resume continues
        from; the writer reads its own run, not through the reader)."""
        return self.group[name][: self._valid_rows(self.specs[name])]

    def update_attrs(self, **values: Any) -> None:
        meta = dict(self.group.attrs["lca"])
        meta.update(values)
        self.group.attrs["lca"] = meta

    @property
    def steps(self) -> int:
        """Steps committed plus those buffered."""
        return self.counters["lca"] + self._uncommitted.get("lca", 0)

    @property
    def recorded(self) -> int:
        """Recorded trajectory steps, committed plus buffered."""
        return self.counters["trajectory"] + self._uncommitted.get("trajectory", 0)

    def close(self) -> None:
        """Flush, then give the run up to the next writer."""
        try:
            self.flush()
        finally:
            self._lock.release()


def replace_run(new: str | os.PathLike[str], old: str | os.PathLike[str]) -> None:
    """Move the complete run ``new`` into ``old``, replacing the run there (only its own
    files: anything else a user keeps in the directory stays), under ``old``'s writer lock."""
    new, old = Path(new), Path(old)
    lock = WriterLock(old)
    try:
        others = [e.name for e in os.scandir(old) if e.name not in LCA_FILES]
        if others and not is_run(old):
            raise RunExistsError(
                f"{old} holds files that are not an lca run; lca never deletes what it did not "
                "write. Choose another directory."
            )
        for name in _array_names(old):
            shutil.rmtree(old / name)
        (old / "zarr.json").unlink(missing_ok=True)
        for name in sorted(_array_names(new)):
            os.replace(new / name, old / name)
        os.replace(new / "zarr.json", old / "zarr.json")  # last: the run appears whole
    finally:
        lock.release()
    shutil.rmtree(new)


def committed_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """The committed row counters of a run (what survives a crash)."""
    return read_commit(open_group(Path(path), "r")[0])
