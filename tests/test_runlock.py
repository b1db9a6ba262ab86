"""One writer per output folder (latentcc.plumbing.runlock) and the modes of the files latentcc writes."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from latentcc.plumbing.atomic import atomic_write_bytes, current_umask
from latentcc.plumbing.errors import LatentccError
from latentcc.plumbing.runlock import LOCK_FILE, FolderLock, locks_folder, new_folder
from reliability_runs import FIT_HOLDER, _fit, _interrupted_run, kill_holder, start_holder


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_second_process_is_refused_with_the_holder_named_and_takes_over_after_sigkill(tmp_path, capsys):
    """A real `fit` in another process holds the run folder; fit, fit(resume=True) and the CLI are refused."""
    from latentcc.app.cli import main

    run = tmp_path / "run"
    holder = start_holder(run, script=FIT_HOLDER)  # blocked inside its first epoch, config.json written
    before = _files(run)
    assert "config.json" in before and LOCK_FILE in before
    record = json.loads(before[LOCK_FILE])
    assert (
        record["pid"] == holder.pid and record["what"] == "fit" and "hold_run_folder.py" in record["command"]
    )
    try:
        for resume in (False, True):
            with pytest.raises(LatentccError) as e:
                _fit(tmp_path, resume=resume)
            msg = str(e.value)
            assert f"in use by pid {holder.pid} on host " in msg and "hold_run_folder.py" in msg
            assert "nothing was written" in msg and "choose another output folder" in msg
        argv = ["finetune", "--out", str(run), "--data", "digits", "--max-samples", "100", "--no-progress"]
        assert main(argv) == 2
        assert f"in use by pid {holder.pid}" in capsys.readouterr().err
        assert _files(run) == before  # the holder's files, byte for byte
    finally:
        kill_holder(run)
    assert (run / LOCK_FILE).exists()  # SIGKILL: the dead holder could not clean up...
    res = _fit(tmp_path, epochs=1)  # ...and its lock is taken over: nothing to resume, a fresh run
    assert res.best_epoch == 1 and json.loads((run / "config.json").read_text())["train"]["epochs"] == 1
    assert not (run / LOCK_FILE).exists()  # released (and removed) when fit returned


def test_lock_is_released_when_fit_raises_and_taken_before_any_write(tmp_path):
    _interrupted_run(tmp_path)
    run = tmp_path / "run"
    assert not (run / LOCK_FILE).exists()  # released by the interrupted fit (KeyboardInterrupt)
    seen = []

    def spy(path, *a, **kw):  # every write of the resumed run happens under the lock
        seen.append((Path(path).name, (run / LOCK_FILE).exists()))
        return real(path, *a, **kw)

    import latentcc.plumbing.atomic as atomic

    real = atomic.replace
    with mock.patch.object(atomic, "replace", spy):
        _fit(tmp_path, resume=True)
    assert seen and all(held for _, held in seen), seen
    assert not (run / LOCK_FILE).exists()


def test_threads_nesting_and_waiting(tmp_path):
    lock = FolderLock(tmp_path / "out", func="probe", param="out")
    with lock:
        with FolderLock(tmp_path / "out", func="fit"):  # the holding thread may nest (CLI around fit)
            pass
        assert (tmp_path / "out" / LOCK_FILE).exists()  # still held by the outer lock
        errors = []

        def other():
            try:
                FolderLock(tmp_path / "out", func="probe", param="out").acquire()
            except LatentccError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1 and "'out' parameter of probe" in errors[0]
        assert f"this same process (pid {os.getpid()}: another thread" in errors[0]
    assert not (tmp_path / "out" / LOCK_FILE).exists()

    # wait_s: a short critical section (a docs update) waits for the holder instead of failing
    held = FolderLock(tmp_path / "docs", func="run_reproduction", param="docs").acquire()
    done = []

    def waiter():
        with FolderLock(tmp_path / "docs", func="run_reproduction", param="docs", wait_s=10):
            done.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    released = time.monotonic()
    held.release()
    t.join()
    assert done and done[0] >= released


def test_a_stale_record_is_overwritten_and_a_replaced_file_is_not_deleted(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "command": "old"}))  # no flock
    lock = FolderLock(folder, func="fit").acquire()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    # someone deletes the lock file while we hold it and another process creates its own: not ours to delete
    (folder / LOCK_FILE).unlink()
    (folder / LOCK_FILE).write_text("theirs")
    lock.release()
    assert (folder / LOCK_FILE).read_text() == "theirs"


def test_locks_folder_decorator_and_unlockable_lock_file(tmp_path):
    @locks_folder("out_dir")
    def write(*, out_dir=None):
        return None if out_dir is None else (Path(out_dir) / LOCK_FILE).exists()

    assert write(out_dir=None) is None and write(out_dir=tmp_path / "a") is True
    assert not (tmp_path / "a" / LOCK_FILE).exists()
    (tmp_path / "b" / LOCK_FILE).mkdir(parents=True)  # not a regular file
    with pytest.raises(
        LatentccError, match=r"'out_dir' parameter of write must be a folder latentcc can lock.*"
    ):
        write(out_dir=tmp_path / "b")


def test_default_folders_are_never_shared(tmp_path):
    a, b = new_folder(tmp_path, "20240101-000000"), new_folder(tmp_path, "20240101-000000")
    assert a.name == "20240101-000000" and b.name == "20240101-000000-2" and a.is_dir() and b.is_dir()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_and_folders_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        _fit(tmp_path, epochs=1)
        p = atomic_write_bytes(tmp_path / "x.bin", b"1")
    finally:
        os.umask(old)
    run = tmp_path / "run"
    files = [q for q in run.rglob("*") if q.is_file()] + [p]
    dirs = [run, *(q for q in run.rglob("*") if q.is_dir())]
    assert {stat.S_IMODE(q.stat().st_mode) for q in files} == {0o666 & ~umask}
    assert {stat.S_IMODE(q.stat().st_mode) for q in dirs} == {0o777 & ~umask}
    assert any(q.parent.name.startswith("epoch-") for q in files)  # checkpoint files and folders too


def test_umask_fallback_without_proc(monkeypatch):
    old = os.umask(0o027)
    try:
        real_open = open

        def no_proc(path, *a, **kw):
            if str(path) == "/proc/self/status":
                raise FileNotFoundError(path)
            return real_open(path, *a, **kw)

        monkeypatch.setattr("builtins.open", no_proc)
        assert current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # the fallback restored it
    finally:
        os.umask(old)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_is_another_process_and_out_of_order_release_raises(tmp_path):
    import fcntl
    import warnings

    folder = tmp_path / "run"
    with FolderLock(folder, func="fit") as outer:
        with warnings.catch_warnings():
            # "fork with threads": this child starts none and ends with os._exit
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: same thread id as the parent's holder, inherited lock table
            code = 1
            try:
                try:
                    FolderLock(folder, func="fit").acquire()
                    code = 2  # treated as nested: it would write unlocked beside its parent
                except LatentccError as e:
                    code = 0 if f"pid {os.getppid()}" in str(e) else 3
                outer.release()  # leaving the inherited lock: must not delete the parent's lock file
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert (folder / LOCK_FILE).exists()
        fd = os.open(folder, os.O_RDONLY)
        try:  # the parent still holds the folder against every other open descriptor
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)

    outer = FolderLock(folder, func="probe").acquire()
    inner = FolderLock(folder, func="fit").acquire()
    with pytest.raises(RuntimeError, match="released before 1 lock"):
        outer.release()  # non-LIFO: the real lock must not go while `inner` still writes
    assert (folder / LOCK_FILE).exists()
    inner.release()
    outer.release()
    assert not (folder / LOCK_FILE).exists()


def test_deleting_the_record_does_not_let_a_second_writer_in(tmp_path):
    """The lock is on the folder: `rm .latentcc.lock` while a run writes leaves it locked (holder still named)."""
    run = tmp_path / "run"
    holder = start_holder(run)  # another process holding the folder, as fit does
    try:
        (run / LOCK_FILE).unlink()  # by hand
        before = _files(run)
        with pytest.raises(LatentccError) as e:
            _fit(tmp_path, epochs=1)
        msg = str(e.value)
        # the kernel still knows the holder (/proc/locks) though its record is gone
        assert f"in use by pid {holder.pid} on host " in msg and "hold_run_folder.py" in msg
        assert f"its record {run / LOCK_FILE} was deleted" in msg and "nothing was written" in msg
        assert _files(run) == before and not (run / LOCK_FILE).exists()
    finally:
        kill_holder(run)
    assert _fit(tmp_path, epochs=1).best_epoch == 1  # a dead holder's lock is no lock


def test_the_folder_is_the_lock_and_a_released_holder_leaves_anothers_record(tmp_path):
    import fcntl

    folder = tmp_path / "new" / "deep"  # created by the lock itself
    lock = FolderLock(folder, func="fit").acquire()
    fd = os.open(folder, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):  # the folder itself is locked, against any other descriptor
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rec = os.open(folder / LOCK_FILE, os.O_RDWR)
        fcntl.flock(rec, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the record is only a record
        os.close(rec)
        # the record replaced while held (deleted by hand, then someone's file): not ours to delete
        (folder / LOCK_FILE).unlink()
        (folder / LOCK_FILE).write_text("theirs")
        lock.release()
        assert (folder / LOCK_FILE).read_text() == "theirs"
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(fd)


def test_a_filesystem_that_cannot_lock_folders_falls_back_to_the_record_file(tmp_path):
    """NFS-style: flock on a directory fails (EBADF); the record file becomes the lock, with a warning."""
    import errno
    import fcntl

    real = fcntl.flock

    def flock(fd, op):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real(fd, op)

    folder = tmp_path / "run"
    with mock.patch.object(fcntl, "flock", flock):
        with pytest.warns(
            RuntimeWarning, match=r"cannot be locked as a folder .*locks the file .*\.latentcc\.lock"
        ):
            lock = FolderLock(folder, func="fit").acquire()
        record = json.loads((folder / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["what"] == "fit"
        fd = os.open(folder / LOCK_FILE, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # the record file is the lock now
                real(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        errors = []

        def other():
            try:
                with pytest.warns(RuntimeWarning):
                    FolderLock(folder, func="probe", param="out").acquire()
            except LatentccError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1 and f"this same process (pid {os.getpid()}" in errors[0]
        lock.release()
    assert not (folder / LOCK_FILE).exists()


def test_a_rewritten_file_keeps_its_mode_whatever_the_umask(tmp_path):
    """atomic_write_bytes replaces the file by a new one: it takes the existing file's mode (editors do too)."""
    shared, private = tmp_path / "shared.md", tmp_path / "private.key"
    shared.write_text("a")
    private.write_text("a")
    os.chmod(shared, 0o644)
    os.chmod(private, 0o600)
    link = tmp_path / "link.md"
    link.symlink_to(shared)
    old = os.umask(0o077)
    try:
        atomic_write_bytes(shared, b"b")
        atomic_write_bytes(tmp_path / "new.md", b"b")  # a new file: the umask's mode
        os.umask(0o022)
        atomic_write_bytes(private, b"b")  # a protected file is not opened up by a lax umask either
        os.chmod(shared, 0o664)
        atomic_write_bytes(link, b"c")  # through a symlink: the mode of the file it names
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (shared, private, tmp_path / "new.md", link)}
    assert modes == {"shared.md": 0o664, "private.key": 0o600, "new.md": 0o600, "link.md": 0o664}
    assert private.read_bytes() == b"b" and link.read_bytes() == b"c"


def test_check_new_output_names_what_a_folder_holds_and_accepts_other_files(tmp_path):
    from latentcc.plumbing.errors import LatentccError
    from latentcc.plumbing.runlock import check_new_output, folder_outputs

    check_new_output(tmp_path / "new", func="f", param="out", fix="x")  # absent: fine
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".latentcc.lock").write_text("{}")  # a lock record is no output
    (tmp_path / "log.txt").write_text("")
    check_new_output(tmp_path, func="f", param="out", fix="x")
    (tmp_path / "lcc" / "seed-0").mkdir(parents=True)
    for i in range(7):
        (tmp_path / f"seed-{i}").mkdir()
    (tmp_path / "report.html").write_text("")
    assert folder_outputs(tmp_path) == [
        ("runs of several seeds (latentcc finetune --seeds)", [f"seed-{i}" for i in range(7)]),
        ("probe outputs (latentcc probe)", ["report.html"]),
        ("a demo report (latentcc demo)", ["lcc/seed-0"]),
    ]
    with pytest.raises(LatentccError) as e:
        check_new_output(tmp_path, func="latentcc probe", param="--out", fix="choose another --out.")
    assert str(e.value) == (
        f"The '--out' parameter of latentcc probe must be a new or empty folder (or one without latentcc outputs). "
        f"Got {str(tmp_path)!r} instead. It already holds runs of several seeds (latentcc finetune --seeds): "
        "seed-0, seed-1, seed-2, seed-3, seed-4 and 2 more; probe outputs (latentcc probe): report.html; a demo "
        "report (latentcc demo): lcc/seed-0. Writing there would replace or mix with them, so nothing was "
        "written. Fix: choose another --out."
    )
