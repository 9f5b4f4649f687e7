"""Files lca writes outside a run (reports, JSON results): checked before any work starts.

lca replaces a file only when it wrote it (a report carries a generator mark) or when the
user says ``--force``; it never writes into a run directory, and it says what to pass
instead of failing with a raw ``OSError`` after the work is done.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputError
from .store import is_run

#: written at the start of every file lca produces, so lca knows it may replace it
HTML_MARK = '<meta name="generator" content="lca">'
JSON_MARK = '{"generator": "lca"'
#: a PNG text chunk (``savefig(..., metadata=PNG_METADATA)``) that marks a figure lca drew
PNG_METADATA = {"Software": "lca"}
_PNG_MARK = b"tEXtSoftware\x00lca"


def _written_by_lca(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    text = head.decode("utf-8", errors="replace")
    return HTML_MARK in text or text.startswith(JSON_MARK) or _PNG_MARK in head


def check_output(path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """The path, if lca may write a file there; else :class:`OutputError` saying why."""
    out = Path(path)
    if out.is_symlink():
        raise OutputError(f"{out} is a link; give the path of the file itself")
    if out.is_dir():
        raise OutputError(f"{out} is a directory; give a file name, e.g. {out / 'report.html'}")
    absolute = out.absolute()
    run = next((d for d in absolute.parents if is_run(d)), None)
    if run is not None:
        raise OutputError(
            f"{out} is inside the run {run}; lca never writes into a run directory. "
            "Choose a path outside it (e.g. next to it)."
        )
    existing = next(d for d in absolute.parents if d.exists())
    if not existing.is_dir():
        raise OutputError(f"cannot create {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"cannot write in {existing} (permission denied); choose another path")
    if out.exists() and not force and not _written_by_lca(out):
        raise OutputError(
            f"{out} exists and was not written by lca; pass --force (force=True) to replace "
            "it, or choose another path"
        )
    return out


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.lca-{os.getpid()}"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
