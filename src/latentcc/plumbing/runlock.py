"""One writer per output folder: an OS lock on the folder itself while a command writes there.

Two processes writing one run folder mix their files (one's config.json beside the other's weights)
and delete each other's temporary checkpoints. So every command that writes a folder (``fit`` and
``latentcc finetune``, the demo, ``probe``, ``transfer-layers``, ``reproduce``) holds that folder's
lock from before its first write or clean-up until it returns; a second process is refused at once,
before it writes anything, with the holder named (pid, host, user, command, start time).

The lock is ``flock`` on the folder (a descriptor of the directory, which Linux and macOS lock like a
file): nothing in the folder can be deleted to let a second writer in, and the kernel drops the lock
when its process exits, SIGKILL included, so the lock of a dead process is no lock. The holder's
details go to ``<folder>/.latentcc.lock``, a record only (the refusal message reads it); the next
holder overwrites a dead holder's record, and a holder deletes the record on release only if it is
still the file it wrote. Should a filesystem refuse to lock a directory (some network filesystems),
the lock falls back, with a warning, to ``flock`` on the record file, which then is the lock (and which
deleting by hand would defeat); on Windows, which cannot lock a directory, the record file is always
the lock, and an open file cannot be deleted there. A process that locked a folder (or record file) in
the moment it was being renamed or deleted notices (the path no longer names what it locked) and tries
again.

Within one process, another thread is refused the same way; the thread that holds a folder may lock
it again (nested: ``latentcc finetune`` holds the run folder across ``fit``, which locks it too, and
the results it adds after ``fit`` returns), and releases the locks in reverse order. A forked child
process is another process: it inherits the parent's record of what is held, and its thread may even
have the parent's thread id, so "held" means held by this pid and thread; the child is refused like
any other process, and leaving a lock it inherited neither deletes the record nor ends the parent's
hold.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from latentcc.plumbing.atomic import describe_owner, ensure_writable_dir
from latentcc.plumbing.errors import LatentccError, param_error

try:
    import fcntl
except ImportError:  # Windows: msvcrt locks a byte range instead
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".latentcc.lock"
_WIN_LOCK_OFFSET = 1 << 30  # msvcrt locks bytes: lock one far past the holder record, which stays readable
_POLL_S = 0.05

# (folder, pid, holding thread) -> nesting depth; other threads are refused by flock itself. The pid: a
# forked child inherits this table and the forking thread's id, yet holds nothing
_HELD: dict[tuple[str, int, int], int] = {}
_HELD_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _HELD_LOCK
    _HELD_LOCK = threading.Lock()  # another thread may have held it at the fork: it would never be released


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_after_fork_in_child)

P = ParamSpec("P")
R = TypeVar("R")


class FolderLock:
    """Exclusive ownership of ``folder`` (created if needed) by this process, as a context manager.

    ``wait_s`` > 0 retries for that long before refusing (for short critical sections such as a
    docs update); the default refuses at once, since the holder of a run folder may train for hours.
    ``param``/``func`` name the argument in error messages.
    """

    def __init__(
        self, folder: str | os.PathLike[str], *, func: str, param: str = "out_dir", wait_s: float = 0.0
    ) -> None:
        self.folder, self.func, self.param, self.wait_s = Path(folder), func, param, wait_s
        # the locked descriptor: the folder's (or the record file's, as a fallback)
        self._fd: int | None = None
        self._record_fd: int | None = None  # the record file, when it is not the locked descriptor
        self._key: tuple[str, int, int] | None = None  # set while held: (real path, pid, thread)
        self._nested = False

    @property
    def path(self) -> Path:
        """The holder's record (pid, host, user, command, start), read by a refused process."""
        return self.folder / LOCK_FILE

    def acquire(self) -> FolderLock:
        if self._key is not None:
            raise RuntimeError(f"{self.path} is already held by this FolderLock")
        ensure_writable_dir(self.folder, param=self.param, func=self.func)
        key = (os.path.realpath(self.folder), os.getpid(), threading.get_ident())
        with _HELD_LOCK:
            depth = _HELD.get(key)
            if depth is not None:  # nested in the holding thread of this process
                _HELD[key] = depth + 1
                self._key, self._nested = key, True
                return self
        fd, on_folder = self._lock()
        try:  # the record of a dead holder (killed before it released) is overwritten
            record_fd = self._new_record() if on_folder else fd
            try:
                _write_record(record_fd, self.func)
            except BaseException:
                if record_fd != fd:
                    os.close(record_fd)
                raise
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._record_fd, self._key = fd, (record_fd if on_folder else None), key
        with _HELD_LOCK:
            _HELD[key] = 1
        return self

    def _lock(self) -> tuple[int, bool]:
        """Lock the folder (or, where that is unsupported, the record file): (locked fd, on the folder)."""
        deadline = time.monotonic() + self.wait_s
        on_folder = fcntl is not None  # Windows: msvcrt locks files only
        while True:
            fd = self._open_folder() if on_folder else self._open_record()
            if fd is None:  # a folder we may write but not open (mode -wx): lock the record file instead
                on_folder = False
                continue
            try:
                locked = _try_lock(fd, self.folder, on_folder)
                if locked is None:  # a filesystem that cannot lock a directory
                    os.close(fd)
                    on_folder = False
                    continue
                target = self.folder if on_folder else self.path
                if locked and _names_file(target, fd, follow_symlinks=on_folder):
                    return fd, on_folder
                holder = {} if locked else self._holder(None if on_folder else fd, fd)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            if locked:  # we locked what was renamed or deleted in the meantime: lock the current one
                continue
            if time.monotonic() >= deadline:
                raise param_error(
                    self.param,
                    self.func,
                    "a folder no other process is writing to",
                    str(self.folder),
                    f"It is in use by {_describe(holder, self.path)}. Two processes writing one folder would mix "
                    "their files, so nothing was written. Wait for that process to finish (or stop it), or "
                    "choose another output folder.",
                )
            time.sleep(_POLL_S)

    def release(self) -> None:
        key = self._key
        if key is None:
            return
        if key[1] != os.getpid():  # a forked child leaving a lock it inherited: the parent still holds it
            self._key = None
            for fd in self._take_fds():
                os.close(fd)  # the child's copies; the parent's keep the lock (and the record stays)
            return
        with _HELD_LOCK:
            depth = _HELD.get(key, 0)
            if self._nested:  # the outer holder keeps the folder
                self._key, self._nested = None, False
                if depth > 1:
                    _HELD[key] = depth - 1
                return
            if depth > 1:  # dropping the real lock now would leave the inner holders writing unlocked
                raise RuntimeError(
                    f"{self.folder}: the outer FolderLock is released before {depth - 1} lock(s) nested in it; "
                    "release nested locks first (use them as `with` blocks)"
                )
            self._key = None
            _HELD.pop(key, None)
        record_fd = self._record_fd if self._record_fd is not None else self._fd
        fds = self._take_fds()
        try:
            # delete the record while still holding the lock, unless someone replaced it (then it is not ours)
            if fcntl is not None and record_fd is not None and _names_file(self.path, record_fd):
                self.path.unlink(missing_ok=True)
        finally:
            for fd in fds:
                os.close(fd)  # the locked one last: releases the lock
        if fcntl is None:  # Windows cannot delete an open file: delete it after, if nobody holds it
            try:
                self.path.unlink()
            except OSError:
                pass

    def _take_fds(self) -> list[int]:
        """The open descriptors, the locked one last (closing it releases the lock); forgets them."""
        fds = [fd for fd in (self._record_fd, self._fd) if fd is not None]
        self._fd = self._record_fd = None
        return fds

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _open_folder(self) -> int | None:
        """A descriptor of the folder to lock, or None where this process cannot open it (then: fallback)."""
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.folder, flags)
        except PermissionError as e:
            _warn_fallback(self.folder, self.path, e)
            return None
        except OSError as e:
            raise self._unlockable(self.folder, e) from e

    def _open_record(self) -> int:
        """The record file, created if needed: the lock itself in the fallback (file lock) mode."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            return os.open(self.path, flags, 0o666)  # the umask applies, as for every file we write
        except OSError as e:
            raise self._unlockable(self.path, e) from e

    def _new_record(self) -> int:
        """A new record file for the folder lock we hold: any existing one is a dead (or deposed) holder's."""
        try:
            if self.path.is_symlink() or self.path.is_file():
                self.path.unlink()  # not truncated in place: that file may be open elsewhere (a hard link)
            flags = (
                os.O_RDWR
                | os.O_CREAT
                | os.O_EXCL
                | getattr(os, "O_CLOEXEC", 0)
                | getattr(os, "O_NOFOLLOW", 0)
            )
            return os.open(self.path, flags, 0o666)
        except OSError as e:
            raise self._unlockable(self.path, e) from e

    def _unlockable(self, path: Path, e: OSError) -> LatentccError:
        owner = describe_owner(path)
        what = "It" if path == self.folder else f"Its lock record {path}"
        return param_error(
            self.param,
            self.func,
            "a folder latentcc can lock for writing",
            str(self.folder),
            f"{what} cannot be opened ({e.strerror or e}{'; ' + owner if owner else ''}). Choose another output "
            "folder, or remove the lock record if it is not a regular file.",
        )

    def _holder(self, record_fd: int | None, locked_fd: int) -> dict[str, Any]:
        """Who holds the lock: their record, else what the kernel says (/proc/locks) about the lock's owner."""
        if record_fd is not None:
            holder = _read_record(record_fd)
        else:
            try:
                fd = os.open(
                    self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
                )
            except OSError:  # not written yet (the holder has just locked the folder) or deleted by hand
                holder = {}
            else:
                try:
                    holder = _read_record(fd)
                finally:
                    os.close(fd)
        return holder or _holder_from_kernel(locked_fd)


def locks_folder(
    param: str = "out_dir", *, before: Callable[..., None] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated function holding the :class:`FolderLock` of the folder its keyword ``param`` names.

    ``None`` (no output folder) runs it without a lock. The lock is taken before the function runs,
    so before it writes or cleans anything, and released when it returns or raises. ``before`` (called
    with the function's arguments) runs first, outside the lock: checks that must refuse a call before
    its folder is even created (e.g. a missing optional dependency).
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if before is not None:
                before(*args, **kwargs)
            folder = kwargs.get(param)
            if folder is None:
                return fn(*args, **kwargs)
            with FolderLock(folder, func=fn.__name__, param=param):  # type: ignore[arg-type]
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def new_folder(parent: str | os.PathLike[str], name: str) -> Path:
    """Create ``parent/name`` (``name-2``, ``name-3``... if taken): a default output folder of its own.

    Default folders are timestamps to the second; two commands started in the same second would
    otherwise share one. ``mkdir`` without ``exist_ok`` is atomic, so each caller gets its own.
    """
    base = Path(parent)
    base.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        folder = base / (name if i == 1 else f"{name}-{i}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free folder name {name}-N in {base}")


# What latentcc commands write into an output folder, grouped by what it shows the folder holds. A
# command refuses a folder holding any of them (check_new_output): writing there would replace files
# (a second `probe --out P` rewrote profile.json and the report) or mix runs (a run beside seed-*/).
_OUTPUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "a run (latentcc finetune)",
        ("config.json", "results.json", "checkpoints", "best.safetensors", "metrics.json"),
    ),
    ("runs of several seeds (latentcc finetune --seeds)", ("seed-*",)),
    ("probe outputs (latentcc probe)", ("profile.json", "profile.csv", "report.html")),
    (
        "layer-wise transfer tables (latentcc transfer-layers)",
        ("transfer_layers.json", "transfer_layers.csv"),
    ),
    (
        "a demo report (latentcc demo)",
        ("summary.json", "summary.md", "runs/*/side.json", "baseline/seed-*", "lcc/seed-*"),
    ),
    ("a comparison (latentcc compare)", ("compare.json", "*/side.json")),
    ("a reproduction (latentcc reproduce)", ("reproduction.json", "result.json", "result.md")),
)


def folder_outputs(folder: str | os.PathLike[str]) -> list[tuple[str, list[str]]]:
    """What latentcc outputs ``folder`` holds: [(what, [names found])], empty for a new or foreign folder."""
    base = Path(folder)
    if not base.is_dir():
        return []
    found = []
    for what, patterns in _OUTPUTS:
        names = sorted({p.relative_to(base).as_posix() for pat in patterns for p in base.glob(pat)})
        if names:
            found.append((what, names))
    return found


def describe_outputs(found: list[tuple[str, list[str]]]) -> str:
    """``found`` (from :func:`folder_outputs`) in words: "a run (...): config.json, checkpoints; ..."."""
    return "; ".join(
        f"{what}: {', '.join(names[:5])}{f' and {len(names) - 5} more' if len(names) > 5 else ''}"
        for what, names in found
    )


def check_new_output(folder: str | os.PathLike[str], *, func: str, param: str, fix: str) -> None:
    """Refuse ``folder`` as an output folder if it already holds latentcc outputs, naming them and ``fix``.

    The one rule of every command that writes an output folder, called while holding the folder's
    lock (so no other process adds outputs between the check and the writes). An empty folder, or
    one holding other files only, is accepted.
    """
    found = folder_outputs(folder)
    if found:
        raise param_error(
            param,
            func,
            "a new or empty folder (or one without latentcc outputs)",
            str(folder),
            f"It already holds {describe_outputs(found)}. Writing there would replace or mix with them, so "
            f"nothing was written. Fix: {fix}",
        )


# errors of a filesystem without (directory) locks, not of a lock that someone holds
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL, errno.EBADF}


def _try_lock(fd: int, folder: Path, on_folder: bool) -> bool | None:
    """Lock ``fd`` without waiting: True if we hold it, False if another open file holds it.

    None: the folder's filesystem cannot lock a directory (NFS emulates flock with byte-range locks,
    which need a file open for writing); the caller then locks the record file instead.
    """
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            import msvcrt

            os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN, errno.EDEADLK):  # "held" on some systems/filesystems
            return False
        if e.errno in _UNSUPPORTED:
            if on_folder:
                _warn_fallback(folder, folder / LOCK_FILE, e)
                return None
            warnings.warn(
                f"The filesystem of {folder} does not support file locks ({e.strerror}); latentcc cannot "
                "stop two processes from writing it at once.",
                RuntimeWarning,
                stacklevel=5,
            )
            return True
        raise


def _warn_fallback(folder: Path, record: Path, e: OSError) -> None:
    warnings.warn(
        f"{folder} cannot be locked as a folder ({e.strerror or e}); latentcc locks the file {record} instead, "
        "which keeps a second process out unless someone deletes that file by hand while this one runs.",
        RuntimeWarning,
        stacklevel=5,
    )


def _names_file(path: Path, fd: int, *, follow_symlinks: bool = False) -> bool:
    """Whether ``path`` still names the file (or folder) open as ``fd``: not deleted or replaced since."""
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _holder_from_kernel(fd: int) -> dict[str, Any]:
    """The holder of the lock on ``fd``'s file from /proc/locks (Linux), for when its record is gone.

    Best effort: {} elsewhere, or when the holder lives in another pid namespace (a container).
    """
    if not hasattr(os, "major"):  # Windows
        return {}
    st = os.fstat(fd)
    here = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4304 fe:00:2146641 0 EOF" (a waiter: "1: -> FLOCK ...", skipped)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == here:
            pid = int(fields[4]) if fields[4].isdigit() else 0
            if pid <= 0:
                return {}
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                command = "?"
            return {"pid": pid, "host": socket.gethostname(), "command": command, "record": "missing"}
    return {}


def _write_record(fd: int, what: str) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": _username(),
        "command": " ".join(sys.argv) or sys.executable,
        "what": what,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    data = (json.dumps(record, allow_nan=False) + "\n").encode()  # strict JSON, like every file we write
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)


def _read_record(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 1 << 16).decode())
    except (OSError, ValueError):  # not written yet (the holder has just locked it) or not ours
        return {}
    return record if isinstance(record, dict) else {}


def _describe(holder: dict[str, Any], path: Path) -> str:
    if not holder:
        return f"another process (its record {path} is not written yet, or was deleted)"
    pid, host = holder.get("pid"), holder.get("host")
    who = (
        f"this same process (pid {pid}: another thread, or a callback, is writing it)"
        if pid == os.getpid() and host == socket.gethostname()
        else f"pid {pid} on host {host}"
    )
    if holder.get("record") == "missing":  # named by the kernel: the record was deleted by hand
        return f"{who}, running `{holder.get('command')}` (its record {path} was deleted)"
    return (
        f"{who}, user {holder.get('user')}, running `{holder.get('command')}` ({holder.get('what')}) "
        f"since {holder.get('started')}"
    )


def _username() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (ImportError, KeyError, OSError):
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
