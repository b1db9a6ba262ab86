"""Crash-safe file writes: write to a temporary file in the same folder, fsync, then rename.

A reader (or a resumed run) therefore sees either the old file or the new one, never half of one.
Every write commits through :func:`replace`, the one rename of the package (checkpoint folders too);
the kill -9 tests stop the process exactly there. A process killed before it renames leaves a
``.<name>.<random>.tmp`` file behind, which :func:`remove_stale_temps` clears on the next run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from latentcc.errors import WriteError, param_error

_TMP_SUFFIX = ".tmp"
# mkstemp names: .<target name>.<8 random chars>.tmp
_STALE_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """``os.replace``: the commit point of every write in latentcc (atomic on POSIX and Windows)."""
    os.replace(src, dst)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + :func:`replace`).

    On failure (disk full, permissions...) the temp file is removed, ``path`` keeps its previous
    content, and a :class:`~latentcc.errors.WriteError` names the file, the cause and the fix.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from e
        raise
    _fsync_dir(path.parent)
    return path


def write_error(path: Path, e: OSError, *, what: str = "", kept: str | None = None) -> WriteError:
    """The WriteError for a failed write of ``path``: cause, what is left intact, and the fix."""
    cause = e.strerror or str(e) or type(e).__name__
    fix = (
        "Free some disk space"
        if e.errno in (errno.ENOSPC, errno.EDQUOT)
        else "Check the folder's permissions and free space"
    )
    kept = kept or (f"{path} keeps its previous content" if path.exists() else f"{path} was not created")
    err = WriteError(
        f"Could not write {what or path} ({cause}, errno {e.errno}); nothing was half-written: {kept}. "
        f"{fix}, or choose another output folder, and run again (a training run continues with --resume)."
    )
    err.errno = e.errno
    return err


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files an interrupted :func:`atomic_write_bytes` left in ``folder``."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and _STALE_TMP.match(p.name):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_writable_dir(path: str | os.PathLike[str], *, param: str = "out_dir", func: str = "fit") -> Path:
    """Create ``path`` if needed and prove we can write into it, or raise a clear LatentccError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise param_error(
            param,
            func,
            "a folder latentcc can create and write to",
            str(path),
            f"({e.strerror}). Choose another output folder.",
        ) from e
    return path
