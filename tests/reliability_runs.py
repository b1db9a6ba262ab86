"""Reliability cases of run folders: one writer at a time, file modes, and resumes that verify what they continue.

Two-writer cases use a real second process (``start_holder``): it takes the run folder the way ``fit``
does and waits; the case's ``fit`` must be refused with that process named, and its files left intact.
"""

from __future__ import annotations

import atexit
import errno
import functools
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from latentcc.plumbing.errors import CheckpointError, LatentccError
from reliability_base import Case

# A process that owns a folder as `fit` does (FolderLock, then config.json), says "ready" and waits.
HOLDER = """
import sys, time
from pathlib import Path
from latentcc.plumbing.runlock import FolderLock

folder = Path(sys.argv[1])
FolderLock(folder, func="fit").acquire()
(folder / "config.json").write_text('{"train": {"lr": 0.001}}\\n')
print("ready", flush=True)
time.sleep(300)
"""

# A real `fit` (tiny model, tiny data) that blocks at the start of its first epoch, after config.json.
FIT_HOLDER = """
import sys, time
import numpy as np, torch
from latentcc.config import TrainConfig
from latentcc.data import from_arrays
from latentcc.train import fit

class Hold:
    def on_epoch_start(self, ctx):
        print("ready", flush=True)
        time.sleep(300)

    def on_epoch_end(self, ctx):
        pass

x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
cfg = TrainConfig(epochs=1, batch_size=16, progress=False, tensorboard=False, device="cpu")
fit(model, from_arrays(x, np.repeat(np.arange(4), 10), val_fraction=0.25, test_fraction=0.25), config=cfg,
    out_dir=sys.argv[1], callbacks=[Hold()])
"""

_HOLDERS: dict[Path, subprocess.Popen] = {}
atexit.register(lambda: [p.kill() for p in _HOLDERS.values()])  # a holder a failed case did not stop


@functools.cache
def _script(text: str) -> Path:
    folder = tempfile.mkdtemp(prefix="latentcc-holder-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "hold_run_folder.py"
    path.write_text(text)
    return path


def start_holder(folder: Path, *, script: str = HOLDER) -> subprocess.Popen:
    """Start a process that holds ``folder``'s lock; return once it holds it."""
    path = _script(script)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, str(path), str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the holder process failed: {proc.communicate()[1]}")
    _HOLDERS[folder] = proc
    return proc


def kill_holder(folder: Path) -> int:
    """SIGKILL the holder of ``folder`` (it gets no chance to release anything); return its pid."""
    proc = _HOLDERS.pop(folder)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return proc.pid


# ----------------------------------------------------------------------------- small runs


def _splits(seed: int = 0, n: int = 40) -> Any:
    from latentcc.data import from_arrays

    x = np.random.default_rng(seed).random((n, 8, 8)).astype(np.float32)
    return from_arrays(x, np.repeat(np.arange(4), n // 4), val_fraction=0.25, test_fraction=0.25)


class _Relabelled(torch.utils.data.Dataset):
    """A user's Dataset: the same inputs with every label moved to the next class."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        x, y, idx = self.ds[i]
        return x, (y + 1) % 4, idx


def _relabelled() -> Any:
    d = _splits()
    return SimpleNamespace(train=_Relabelled(d.train), val=d.val, test=d.test, classes=d.classes)


def _model(act: type[nn.Module] = nn.ReLU, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), act(), nn.Linear(16, 4))


def _fit(tmp: Path, *, model: nn.Module | None = None, data: Any = None, epochs: int = 2, **kw: Any) -> Any:
    from latentcc.config import TrainConfig
    from latentcc.train import fit

    cfg = TrainConfig(epochs=epochs, batch_size=16, progress=False, tensorboard=False, device="cpu")
    return fit(
        model or _model(), data if data is not None else _splits(), config=cfg, out_dir=tmp / "run", **kw
    )


class _Stop:
    def on_epoch_start(self, ctx: Any) -> None:
        pass

    def on_epoch_end(self, ctx: Any) -> None:
        if ctx.epoch == 1:  # after the first checkpoint
            raise KeyboardInterrupt


def _interrupted_run(tmp: Path) -> None:
    """A 2-epoch run stopped after its first checkpoint (as by Ctrl-C)."""
    try:
        _fit(tmp, callbacks=[_Stop()])
    except KeyboardInterrupt:
        pass


def _then(change: Any) -> Any:
    def setup(tmp: Path) -> None:
        _interrupted_run(tmp)
        change(tmp)

    return setup


def as_older_latentcc(run: Path) -> None:
    """Make ``run``'s checkpoints as an older latentcc wrote them: without the checksum of config.json.

    Tests that edit config.json to stand for a run of an older latentcc (a setting it did not have)
    need this too: the checkpoints of such a run hold no checksum, while an edit of a current run's
    config.json is refused as an edit.
    """
    import hashlib
    import json

    for state in (run / "checkpoints").glob("epoch-*/state.json"):
        tree = json.loads(state.read_text())
        tree["__dict__"] = [kv for kv in tree["__dict__"] if kv[0] != "config_sha256"]
        state.write_text(json.dumps(tree))
        manifest = state.parent / "MANIFEST.json"
        sums = json.loads(manifest.read_text())
        sums["state.json"] = hashlib.sha256(state.read_bytes()).hexdigest()
        manifest.write_text(json.dumps(sums))


# ----------------------------------------------------------------------------- triggers


def _hold(tmp: Path) -> None:
    (tmp / "run").mkdir()
    start_holder(tmp / "run")


def _second_writer(resume: bool) -> Any:
    def trigger(tmp: Path) -> None:
        try:
            _fit(tmp, resume=resume)
        finally:
            kill_holder(tmp / "run")  # SIGKILL: its files (and its lock file) stay as they were

    return trigger


def _hold_then_kill(tmp: Path) -> None:
    (tmp / "run").mkdir()
    start_holder(tmp / "run")
    kill_holder(tmp / "run")


def _take_over(tmp: Path) -> str:
    lock = tmp / "run" / ".latentcc.lock"
    was = lock.exists()
    res = _fit(tmp, epochs=1)
    return (
        f"works: the lock file of the SIGKILLed holder (present: {was}) is taken over; the run trains "
        f"(best epoch {res.best_epoch}) and removes the lock file when it returns (present: {lock.exists()})"
    )


def _deny_access(name: str) -> Any:
    real = os.access

    def access(path: Any, mode: int, **kw: Any) -> bool:
        return False if Path(path).name == name else real(path, mode, **kw)

    return access


def _resume_denied(tmp: Path) -> None:
    # root may write anything: simulate the folder of another user (drwxr-xr-x, owned by them)
    with mock.patch("os.access", _deny_access("checkpoints")):
        _fit(tmp, resume=True)


def _resume_unreadable(tmp: Path) -> None:
    real = Path.read_text

    def read_text(self: Path, *a: Any, **kw: Any) -> str:
        if self.name == "latest.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **kw)

    with mock.patch.object(Path, "read_text", read_text):
        _fit(tmp, resume=True)


def _other_users_folder(tmp: Path) -> None:
    denied = PermissionError(errno.EACCES, "Permission denied")
    with mock.patch("tempfile.NamedTemporaryFile", side_effect=denied):
        _fit(tmp, resume=True)


def _modes(tmp: Path) -> str:
    seen = {}
    for umask in (0o022, 0o077):
        old = os.umask(umask)
        try:
            _fit(tmp / f"u{umask:03o}", epochs=1)
        finally:
            os.umask(old)
        run = tmp / f"u{umask:03o}" / "run"
        files = {oct(stat.S_IMODE(p.stat().st_mode)) for p in run.rglob("*") if p.is_file()}
        dirs = {oct(stat.S_IMODE(p.stat().st_mode)) for p in [run, *run.rglob("*")] if p.is_dir()}
        seen[f"{umask:03o}"] = f"files {sorted(files)}, folders {sorted(dirs)}"
    return f"works: umask 022: {seen['022']}; umask 077: {seen['077']}"


def _del(name: str) -> Any:
    return lambda tmp: (tmp / "run" / name).unlink()


def _put(name: str, text: str) -> Any:
    return lambda tmp: (tmp / "run" / name).write_text(text)


def _hold_then_delete_record(tmp: Path) -> None:
    (tmp / "run").mkdir()
    start_holder(tmp / "run")
    (tmp / "run" / ".latentcc.lock").unlink()  # rm by hand, as a user would "clear a stale lock"


def _kept_mode(tmp: Path) -> str:
    """`(umask 077; latentcc reproduce ... --docs repro.md)` on an existing 0644 docs file."""
    from latentcc.app.reproduce import _update_docs
    from latentcc.app.reproduce.base import ClaimResult

    doc = tmp / "repro.md"
    doc.write_text("# Reproductions\n")
    os.chmod(doc, 0o644)
    result = ClaimResult("nc-transfer", "a claim", "a setting", "a result", "agree", [{"a": 1}])
    old = os.umask(0o077)
    try:
        _update_docs(doc, "nc-transfer", result, tmp)
    finally:
        os.umask(old)
    mode = stat.S_IMODE(doc.stat().st_mode)
    has = "<!-- reproduce:nc-transfer -->" in doc.read_text()
    return f"works: the rewritten docs file keeps mode {mode:o} (section written: {has})"


def _docs_copy_rows(tmp: Path) -> str:
    """A copy of docs/reproductions.md outside docs/, beside an empty reproductions/summary.json."""
    from latentcc.app.reproduce import REPRODUCTIONS
    from latentcc.app.reproduce.base import ClaimResult, update_docs

    doc = tmp / "x" / "repro.md"
    (tmp / "x" / "reproductions").mkdir(parents=True)
    (tmp / "x" / "reproductions" / "summary.json").write_text("{}\n")
    rows = [f"| [`{n}`](#{n}) | **agree** | old result of {n} |" for n in sorted(REPRODUCTIONS)]
    doc.write_text("# R\n\n<!-- summary -->\n" + "\n".join(rows) + "\n<!-- /summary -->\n")
    update_docs(
        doc, ClaimResult("nc-transfer", "c", "s", "new result", "disagree", [{"a": 1}]), "reproductions"
    )
    text = doc.read_text()
    kept = sum(r in text for r in rows if "`nc-transfer`" not in r)
    new = "| [`nc-transfer`](#nc-transfer) | **disagree** | new result |" in text
    return f"works: the {kept} other rows (of {len(rows)}) are kept as they were; nc-transfer's is replaced ({new})"


def _resume_with(**kw: Any) -> Any:
    def trigger(tmp: Path) -> None:
        if "optimizer" in kw:  # a fresh optimizer of the model being resumed
            model = _model()
            _fit(tmp, resume=True, model=model, optimizer=kw["optimizer"](model.parameters()))
        else:
            _fit(tmp, resume=True, **kw)

    return trigger


def _cli(*argv: str) -> Any:
    """A `latentcc` command as main runs it, but raising its error (main prints it and exits 2)."""

    def trigger(tmp: Path) -> None:
        from latentcc.app.cli import _dispatch, build_parser

        _dispatch(build_parser().parse_args([a.replace("TMP", str(tmp)) for a in argv]))

    return trigger


def _files(*names: str) -> Any:
    """A setup that writes each name under tmp (a trailing / makes a folder)."""

    def setup(tmp: Path) -> None:
        for name in names:
            path = tmp / name
            if name.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text('{"train": {"epochs": 2}}\n')

    return setup


def _edit_epochs(tmp: Path) -> None:
    import json

    path = tmp / "run" / "config.json"
    record = json.loads(path.read_text())
    record["train"]["epochs"] = 3
    path.write_text(json.dumps(record))


def _reproduce_docs_in_run(tmp: Path) -> None:
    from latentcc.app.reproduce import run_reproduction

    run_reproduction("nc-transfer", size="ci", seeds=[0], out_dir=tmp / "X", docs=tmp / "R" / "doc.md")


_TINY = ("--data", "digits", "--max-samples", "100", "--no-progress")


def cases() -> list[Case]:
    L, C = LatentccError, CheckpointError
    busy = (r"'out_dir' parameter of fit must be a folder no other process is writing to.*It is in use by pid \d+ "
            r"on host .*running `.*hold_run_folder.py .*` \(fit\) since .*nothing was written.*Wait for that process "
            r"to finish \(or stop it\), or choose another output folder")  # fmt: skip
    fix = r"Restore it from a copy of the run, or start a new run in another folder"
    same = r"To continue it, use the same --model and --data"
    return [
        Case("run-two-writers", "a second `fit` into a run folder another process is writing",
             _second_writer(False), L, busy, _hold),
        Case("run-two-writers-resume", "`fit(resume=True)` of a run folder another process is writing",
             _second_writer(True), L, busy, _hold),
        Case("run-stale-lock", "a run folder whose writer was killed with SIGKILL (its lock file left)",
             _take_over, None, r"works: .*present: True.*taken over.*present: False", _hold_then_kill),
        Case("resume-config-missing", "resume a run whose config.json was deleted",
             lambda t: _fit(t, resume=True), C, rf"config.json is missing.*cannot be checked.*{fix}",
             _then(_del("config.json"))),
        Case("resume-config-corrupt", "resume a run whose config.json is truncated",
             lambda t: _fit(t, resume=True), C, rf"config.json is corrupt \(JSONDecodeError.*{fix}",
             _then(_put("config.json", '{"train": {"lr": 0.0'))),
        Case("resume-config-not-object", "resume a run whose config.json holds a list",
             lambda t: _fit(t, resume=True), C, rf"config.json is corrupt \(a JSON list.*{fix}",
             _then(_put("config.json", "[]\n"))),
        Case("resume-data-swapped", "resume with other inputs of the same shape and labels (Python API)",
             lambda t: _fit(t, resume=True, data=_splits(seed=1)), C,
             rf"with a different model or data: train input content changed; val input content changed.*{same}",
             _interrupted_run),
        Case("resume-data-resized", "resume with 4 samples fewer",
             lambda t: _fit(t, resume=True, data=_splits(n=36)), C,
             r"train split: 20 -> 18 samples; val split: 10 -> 9 samples; test split: 10 -> 9 samples",
             _interrupted_run),
        Case("resume-labels-changed", "resume with the same inputs, training labels moved to the next class",
             lambda t: _fit(t, resume=True, data=_relabelled()), C,
             r"different model or data: train labels changed\. To continue it", _interrupted_run),
        Case("resume-architecture-changed", "resume with ReLU replaced by Tanh (same shapes)",
             lambda t: _fit(t, resume=True, model=_model(nn.Tanh)), C,
             rf"model architecture changed: layer 2 ReLU\(\) -> Tanh\(\).*{same}", _interrupted_run),
        Case("resume-initial-weights-changed", "resume from a model initialised with another seed",
             lambda t: _fit(t, resume=True, model=_model(seed=1)), C,
             r"initial weights changed \(sha256 [0-9a-f]{12}\.\.\. in the run, [0-9a-f]{12}\.\.\. now\)", _interrupted_run),
        Case("resume-permission-denied", "resume another user's run (checkpoints/ not writable by us)",
             _resume_denied, C, r"Cannot resume .*checkpoints cannot be read and written by this process \(.* belongs "
             r"to .*this process runs as .*\)\. Resume it as the user who owns it, or copy the run .*cp -r RUN COPY",
             _interrupted_run),
        Case("resume-file-unreadable", "resume a run whose latest.json we may not read",
             _resume_unreadable, C, r"latest.json cannot be read \(Permission denied.*nothing was loaded or changed.*"
             r"copy the run folder to one you own \(cp -r RUN COPY\)", _interrupted_run),
        Case("out-dir-not-ours", "resume into a run folder we may not write (another user's)",
             _other_users_folder, L, r"'out_dir' parameter of fit must be a folder latentcc can create and write to.*"
             r"Permission denied: .* belongs to .*this process runs as .*copy it to a folder you own \(cp -r RUN COPY\)",
             _interrupted_run),
        Case("file-modes-umask", "fit under umask 022, then 077", _modes, None,
             r"works: umask 022: files \['0o644'\], folders \['0o755'\]; umask 077: files \['0o600'\], folders \['0o700'\]"),
        Case("run-lock-record-deleted", "`rm run/.latentcc.lock` while another process writes the run, then `fit`",
             _second_writer(False), L, r"'out_dir' parameter of fit must be a folder no other process is writing to.*"
             r"It is in use by pid \d+ on host .*running `.*hold_run_folder.py .*` \(its record .*\.latentcc\.lock was "
             r"deleted\).*nothing was written", _hold_then_delete_record),
        Case("file-mode-kept-on-rewrite", "(umask 077; latentcc reproduce ... --docs repro.md) on a 0644 docs file",
             _kept_mode, None, r"works: the rewritten docs file keeps mode 644 \(section written: True\)"),
        Case("reproduce-docs-copy-keeps-rows", "latentcc reproduce nc-transfer --docs on a copy of the docs outside "
             "docs/ (beside an empty summary.json)", _docs_copy_rows, None,
             r"works: the 7 other rows \(of 8\) are kept as they were; nc-transfer's is replaced \(True\)"),
        Case("resume-loss-changed", "resume with loss_fn=lambda a, b: cross_entropy(a, b, label_smoothing=0.9)",
             _resume_with(loss_fn=lambda a, b: torch.nn.functional.cross_entropy(a, b, label_smoothing=0.9)), C,
             r"with a different loss or optimizer: loss_fn: the default \(cross-entropy\) in the run, "
             r"reliability_runs\.cases\.<locals>\.<lambda> now.*pass fit the same loss_fn, penalty, optimizer and "
             r"scheduler", _interrupted_run),
        Case("resume-penalty-added", "resume with a penalty= the run did not have",
             _resume_with(penalty=lambda m, x, y, logits: 10 * logits.pow(2).mean()), C,
             r"with a different loss or optimizer: penalty: none in the run, reliability_runs\.cases\.<locals>\.<lambda> "
             r"now", _interrupted_run),
        Case("resume-optimizer-changed", "resume with optimizer=torch.optim.SGD(lr=1.0) (the run used fit's own)",
             _resume_with(optimizer=lambda params: torch.optim.SGD(params, lr=1.0)), C,
             r"with a different loss or optimizer: optimizer: the default \(built from TrainConfig\) in the run, "
             r"torch\.optim\.sgd\.SGD now", _interrupted_run),
        Case("resume-config-section-not-object", "resume a run whose config.json says \"train\": \"oops\"",
             lambda t: _fit(t, resume=True), C, rf"config.json is corrupt \(its 'train' is a str in the run's record, "
             rf"where latentcc writes a section of settings\).*{fix}", _then(_put("config.json", '{"train": "oops"}'))),
        Case("probe-out-holds-outputs", "latentcc probe --out P a second time (P holds profile.json, report.html)",
             _cli("probe", "--out", "TMP/P", "--metrics", "nc", *_TINY), L,
             r"'--out' parameter of latentcc probe must be a new or empty folder .*It already holds probe outputs "
             r"\(latentcc probe\): profile.json, report.html.*nothing was written. Fix: choose another --out",
             _files("P/profile.json", "P/report.html")),
        Case("transfer-layers-out-is-a-run", "latentcc transfer-layers --out R, R a finished finetune run folder",
             _cli("transfer-layers", "--out", "TMP/R", *_TINY), L,
             r"'--out' parameter of latentcc transfer-layers must be a new or empty folder .*a run \(latentcc "
             r"finetune\): config.json, results.json", _files("R/config.json", "R/results.json")),
        Case("finetune-out-holds-seed-runs", "latentcc finetune --out R, R a finished `--seeds 0,1` folder",
             _cli("finetune", "--out", "TMP/R", "--epochs", "1", *_TINY), L,
             r"already holds runs of several seeds \(latentcc finetune --seeds\): seed-0, seed-1.*Fix: continue those "
             r"runs with --resume --seeds 0,1", _files("R/seed-0/config.json", "R/seed-1/config.json")),
        Case("finetune-seeds-into-a-run", "latentcc finetune --seeds 0,1 --out R, R a finished single run",
             _cli("finetune", "--out", "TMP/R", "--seeds", "0,1", "--epochs", "1", *_TINY), L,
             r"already holds a run \(latentcc finetune\): config.json, results.json.*Fix: continue that run with "
             r"--resume \(without --seeds\)", _files("R/config.json", "R/results.json")),
        Case("resume-seeds-of-a-single-run", "latentcc finetune --out R --resume --seeds 0, R a killed single run",
             _cli("finetune", "--out", "TMP/R", "--resume", "--seeds", "0"), L,
             r"'--seeds' parameter of latentcc finetune --resume must be left out when --out holds a single run.*a "
             r"fresh run would start in .*R/seed-0.*Fix: resume it without --seeds", _files("R/config.json")),
        Case("resume-seed-runs-without-seeds", "latentcc finetune --out R --resume, R a killed `--seeds 0,1` folder",
             _cli("finetune", "--out", "TMP/R", "--resume"), L,
             r"'--seeds' parameter of latentcc finetune --resume must be given when --out holds runs per seed.*Fix: "
             r"resume them with --resume --seeds 0,1", _files("R/seed-0/config.json", "R/seed-1/config.json")),
        Case("reproduce-docs-in-a-run-folder", "latentcc reproduce nc-transfer --out X --docs R/doc.md, R a run folder",
             _reproduce_docs_in_run, L, r"'docs' parameter of run_reproduction must be a Markdown file in a docs folder"
             r".*holds a run \(latentcc finetune\): checkpoints, config.json.*nothing was written",
             _files("R/config.json", "R/checkpoints/")),
        Case("demo-lcc-schedule-checked-first", "latentcc demo --out D --data digits --epochs 1 --seeds 0 (LCC warmup 1)",
             _cli("demo", "--out", "TMP/D", "--epochs", "1", "--seeds", "0", *_TINY), L,
             r"'warmup' parameter of LCCConfig must be smaller than the number of epochs, 1"),
        Case("resume-config-edited", "edit train.epochs 2 -> 3 in config.json of a killed run, resume with epochs=3",
             lambda t: _fit(t, resume=True, epochs=3), C, r"config.json was edited after the run started \(changed: "
             r"train\).*Fix: restore config.json as the run wrote it", _then(_edit_epochs)),
    ]  # fmt: skip
