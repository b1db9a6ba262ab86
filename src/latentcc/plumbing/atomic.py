"""Crash-safe file writes: write to a temporary file in the same folder, fsync, then rename.

A reader (or a resumed run) therefore sees either the old file or the new one, never half of one.
Every write commits through :func:`replace`, the one rename of the package (checkpoint folders too);
the kill -9 tests stop the process exactly there. A process killed before it renames leaves a
``.<name>.<random>.tmp`` file behind, which :func:`remove_stale_temps` clears on the next run.

Files are created with the usual permissions, ``0666 & ~umask`` (folders ``0777 & ~umask``), as
``open``/``mkdir`` would: ``mkstemp``/``mkdtemp`` alone would make every result private (0600/0700),
unreadable to colleagues on a shared server whatever their umask says. A file that already exists keeps
its mode when it is rewritten (as editors do), whatever the umask of the process rewriting it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

from latentcc.plumbing.errors import WriteError, param_error

_TMP_SUFFIX = ".tmp"
# mkstemp names: .<target name>.<8 random chars>.tmp
_STALE_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it.

    ``os.umask`` can only be read by setting it, and a thread creating a file in between would get the
    temporary mask; Linux shows the umask in ``/proc/self/status`` (``Umask:`` line), so we read that and
    fall back to set-and-restore (serialised among latentcc's own threads) elsewhere.

    Read on every call, not cached: the umask can change at run time (a caller's ``os.umask``), and one
    read costs about 14 us, against about 0.5 ms for the fsync of the smallest atomic write (a checkpoint
    save reads it a few times: well under 1% of the save).
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


def make_temp_folder(parent: Path, prefix: str) -> Path:
    """``tempfile.mkdtemp`` in ``parent`` (a unique name, never an existing folder), with the umask's mode."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, folder_mode())  # mkdtemp makes it 0700 whatever the umask
    return tmp


def fsync_dir(folder: Path) -> None:
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
    content, and a :class:`~latentcc.plumbing.errors.WriteError` names the file, the cause and the fix.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes it 0600 whatever the umask; the rename keeps the mode
                os.fchmod(f.fileno(), _mode_for(path))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from e
        raise
    fsync_dir(path.parent)
    return path


def _mode_for(path: Path) -> int:
    """The mode the rewritten ``path`` gets: an existing file's own (as editors keep it), else the umask's.

    A rewrite replaces the file by a new one; taking the umask's mode then would silently change who may
    read a file its owner chose to share (0644 made private by a umask of 077) or to protect (0600 made
    readable by others). Owner and group are not carried over: that needs privileges; the new file is ours.
    """
    try:
        st = os.stat(path)  # through a symlink: the mode of the file it names
    except OSError:  # absent (or not ours to stat): a new file
        return file_mode()
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else file_mode()


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
    """Write ``obj`` atomically as strict JSON (RFC 8259), which every JSON reader accepts.

    Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which strict parsers (JavaScript,
    jq, pandas with some engines) reject: non-finite floats become ``null``, numpy/torch scalars and
    arrays become numbers and lists (via ``tolist``), tuples lists; other objects (paths) their ``str``.
    ``allow_nan=False`` then guarantees that no non-finite number slips through.
    """
    return atomic_write_text(
        path, json.dumps(strict_json(obj), indent=2, allow_nan=False, default=str) + "\n"
    )


def strict_json(obj: Any) -> Any:
    """``obj`` with non-finite floats as None and array-likes as lists (for :func:`atomic_write_json`)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):  # numpy / torch scalars and arrays
        return strict_json(obj.tolist())
    return obj


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
        denied = e.errno in (errno.EACCES, errno.EPERM)
        owner = f": {describe_owner(path)}" if denied else ""
        fix = (
            "; to continue a run you may not write, copy it to a folder you own (cp -r RUN COPY) and resume "
            "the copy" if denied else ""
        )  # fmt: skip
        raise param_error(
            param,
            func,
            "a folder latentcc can create and write to",
            str(path),
            f"({e.strerror}{owner}). Choose another output folder{fix}.",
        ) from e
    return path


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):  # no pwd module (Windows) or a uid without a name (containers)
        return f"uid {uid}"


def describe_owner(path: str | os.PathLike[str]) -> str:
    """Who owns ``path`` (or its nearest existing parent) and who we are, for permission errors.

    E.g. "/runs/a belongs to alice (uid 1001), mode drwxr-x---; this process runs as bob (uid 1002)".
    """
    p = Path(path)
    while True:
        try:
            st = p.stat()
            break
        except FileNotFoundError:
            if p.parent == p:
                return ""
            p = p.parent
        except OSError:  # an unreadable parent: nothing more to say
            return ""
    if not hasattr(os, "geteuid"):
        return f"{p} has mode {stat.filemode(st.st_mode)}"
    return (
        f"{p} belongs to {_user(st.st_uid)}, mode {stat.filemode(st.st_mode)}; "
        f"this process runs as {_user(os.geteuid())}"
    )
