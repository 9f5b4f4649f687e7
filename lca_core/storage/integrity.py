"""What a reader checks before it trusts a run on disk: nothing in a store is believed.

:func:`check_run` walks the directory (regular files only, no link that leaves the run,
sizes and counts bounded), parses the metadata, and checks every array the run's
counters and options say it holds against the schema derived from the layout: dtype,
rows, row shape, chunk size and — in format 2 — that every chunk of the committed rows
exists. All of it before a single chunk is decompressed, so a hostile store is refused in
time and memory bounded by its size on disk; every refusal is a :class:`CorruptRunError`
naming the file and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.parts import PARTS
from ..errors import CorruptRunError, LCAError
from ..layout import Layout
from ..options import Options
from .lock import LCA_FILES
from .store import (
    COMMIT_KEY,
    ArraySpec,
    array_specs,
    require_group_file,
    run_meta,
    shared_design,
)

#: metadata documents larger than this are not parsed
MAX_METADATA_BYTES = 64 * 2**20
#: files a run may hold (a run writes a few per array per 256 steps)
MAX_FILES = 1_000_000
#: bytes one chunk may decode to (the writer's chunks are ~32 MiB)
MAX_CHUNK_BYTES = 256 * 2**20
#: parameters a layout may declare
MAX_PARAMETERS = 2**36


@dataclass(frozen=True)
class Checked:
    """What the checks established: the run's counters, layout, and each array it holds
    (its spec and its committed rows)."""

    counters: dict[str, int]
    layout: Layout
    specs: dict[str, ArraySpec]
    rows: dict[str, int]
    #: the options the run was recorded with
    options: Options


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Any failure while reading ``what`` (checksum, codec, truncation) as a CorruptRunError."""
    try:
        yield
    except LCAError:
        raise
    except Exception as exc:  # a damaged store can fail in any library below us
        raise CorruptRunError(
            f"{path}: {what} cannot be read ({type(exc).__name__}: {exc}); the run is damaged"
        ) from exc


def _walk(root: Path) -> set[str]:
    """Relative paths of the run's files; refuses links leaving it and non-regular files."""
    real_root = root.resolve()
    files: set[str] = set()
    for directory, dirs, names in os.walk(root, followlinks=False):
        for name in dirs + names:
            full = Path(directory) / name
            rel = full.relative_to(root).as_posix()
            if len(files) >= MAX_FILES:
                raise CorruptRunError(f"{root} holds more than {MAX_FILES} files: not a run")
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(real_root):
                    raise CorruptRunError(
                        f"{full} is a link to {target}, outside the run; lca reads nothing "
                        "outside a run directory"
                    )
            mode = full.stat().st_mode if full.exists() else 0
            if name in dirs and stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise CorruptRunError(f"{full} is not a regular file; a run holds only files")
            files.add(rel)
    return files


def _json(root: Path, rel: str) -> dict[str, Any]:
    path = root / rel
    if not path.is_file():
        raise CorruptRunError(f"{path} is missing")
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise CorruptRunError(f"{path} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptRunError(f"{path} is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CorruptRunError(f"{path} is not a JSON object")
    return doc


def _count(value: Any, name: str, where: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CorruptRunError(f"{where}: the counter {name!r} is {value!r}, not a count")
    return value


def _counters(meta_doc: Mapping[str, Any], where: Path) -> dict[str, int]:
    raw = meta_doc.get(COMMIT_KEY, {})
    if not isinstance(raw, dict):
        raise CorruptRunError(f"{where}: the commit counters are not a JSON object")
    counters = {k: _count(raw.get(k, 0), k, where) for k in ("lca", "trajectory")}
    for k in ("lca_started", "trajectory_started"):
        counters[k] = _count(raw.get(k, 0), k, where)
        if counters[k] > 1:
            raise CorruptRunError(f"{where}: the counter {k!r} is {counters[k]}, not 0 or 1")
    return counters


def _layout(meta: Mapping[str, Any], where: Path) -> Layout:
    try:
        layout = Layout.from_list(meta["layout"])
        layers = [str(x) for x in meta["layers"]]
    except LCAError:
        raise
    except Exception as exc:
        raise CorruptRunError(f"{where}: the parameter layout is malformed ({exc})") from exc
    if layout.size > MAX_PARAMETERS or layers != list(layout.layers):
        raise CorruptRunError(f"{where}: the layout ({layout.size} values) is not plausible")
    return layout


def _options(meta: Mapping[str, Any], where: Path) -> Options:
    """The run's stored options, each of a type and range an allocator writes."""
    config = meta.get("config", {})
    if not isinstance(config, dict):
        raise CorruptRunError(f"{where}: the run's config is not a JSON object")
    try:
        return Options.from_config(config)
    except ValueError as exc:
        raise CorruptRunError(f"{where}: the run's config is damaged: {exc}") from exc


def _expected(
    meta: Mapping[str, Any],
    options: Options,
    layout: Layout,
    counters: Mapping[str, int],
    where: Path,
) -> dict[str, ArraySpec]:
    """Each array the run must hold, by name, from its counters and options."""
    config = meta.get("config", {})
    num_classes = meta.get("num_classes")
    if num_classes is not None and (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
    ):
        raise CorruptRunError(f"{where}: num_classes is {num_classes!r}")
    allocated = counters["lca"] > 0 or counters["lca_started"] > 0
    recorded = counters["trajectory"] > 0 or counters["trajectory_started"] > 0
    specs = array_specs(
        layout,
        num_classes=num_classes if options.per_class else None,
        validation=bool(config.get("validation")),
        store_params=options.store_params,
        store_grads=options.store_grads,
        stderr=config.get("eval_subset") is not None,
        shared=shared_design(config),
        store_trajectory=recorded,
        lca=allocated,
        parts=len(_parts(config, where)),
    )
    return {s.name: s for s in specs}


def _parts(config: Mapping[str, Any], where: Path) -> tuple[str, ...]:
    """The optimizer parts a run's steps are split into (none if it is not split)."""
    parts = config.get("parts")
    if parts is None:
        return ()
    if parts != list(PARTS):
        raise CorruptRunError(f"{where}: the run's parts are {parts!r}, not lca's {list(PARTS)}")
    return PARTS


def _chunk_keys(shape: tuple[int, ...], chunks: tuple[int, ...], rows: int) -> Iterator[str]:
    grid = [range(math.ceil(rows / chunks[0]))]
    grid += [range(math.ceil(d / c)) for d, c in zip(shape[1:], chunks[1:], strict=True)]
    for index in np.ndindex(*(len(g) for g in grid)):
        yield "c/" + "/".join(str(i) for i in index)


def check_array(
    root: Path, name: str, spec: ArraySpec, rows: int, files: set[str], version: int
) -> None:
    """One array's metadata against its spec; in format 2, every committed chunk present."""
    doc = _json(root, f"{name}/zarr.json")
    where = root / name
    try:
        shape = tuple(int(d) for d in doc["shape"])
        chunks = tuple(int(c) for c in doc["chunk_grid"]["configuration"]["chunk_shape"])
        dtype = np.dtype(doc["data_type"])
    except Exception as exc:
        raise CorruptRunError(f"{where}: malformed array metadata ({exc})") from exc
    if dtype != np.dtype(spec.dtype) or shape[1:] != spec.row_shape:
        raise CorruptRunError(
            f"{where} holds {dtype} rows of shape {shape[1:]}; the run's layout needs "
            f"{spec.dtype} rows of shape {spec.row_shape}"
        )
    if len(chunks) != len(shape) or any(c < 1 for c in chunks) or shape[0] < rows:
        raise CorruptRunError(
            f"{where} has {shape[0]} rows (chunks {chunks}); its counters commit {rows}"
        )
    if math.prod(chunks) * dtype.itemsize > MAX_CHUNK_BYTES:
        raise CorruptRunError(f"{where}: chunks of {chunks} are larger than lca writes")
    if version >= 2:
        needed = math.ceil(rows / chunks[0]) * math.prod(
            math.ceil(d / c) for d, c in zip(shape[1:], chunks[1:], strict=True)
        )
        stored = sum(1 for f in files if f.startswith(f"{name}/c/"))
        if needed > stored:  # counted first: listing the keys of 1e12 rows takes no memory
            raise CorruptRunError(
                f"{where}: its committed rows need {needed} chunks and {stored} are stored; "
                "lca does not read missing data as zeros"
            )
        missing = [k for k in _chunk_keys(shape, chunks, rows) if f"{name}/{k}" not in files]
        if missing:
            raise CorruptRunError(
                f"{where}: chunk {missing[0]} of the committed rows is missing "
                f"({len(missing)} in all); lca does not read missing data as zeros"
            )


def check_run(root: Path) -> Checked:
    """Everything a reader verifies before it reads a single value (see the module doc)."""
    require_group_file(root)
    files = _walk(root) - set(LCA_FILES)
    attributes = _json(root, "zarr.json").get("attributes", {})
    meta, version = run_meta(root, attributes)
    counters = _counters(attributes, root / "zarr.json")
    layout = _layout(meta, root / "zarr.json")
    options = _options(meta, root / "zarr.json")
    expected = _expected(meta, options, layout, counters, root / "zarr.json")
    rows: dict[str, int] = {}
    for name, spec in expected.items():
        n = counters[spec.stream] + int(spec.point and counters[f"{spec.stream}_started"] > 0)
        if f"{name}/zarr.json" not in files:
            raise CorruptRunError(f"{root}: the array {name!r} that the run commits is missing")
        check_array(root, name, spec, n, files, version)
        rows[name] = n
    return Checked(counters, layout, expected, rows, options)
