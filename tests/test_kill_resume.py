"""kill -9 a `latentcc finetune` run anywhere, then --resume it in a fresh process.

What is proven (CPU, one thread in every child): no file the resume reads is corrupt (every checkpoint
verifies by sha256), leftovers of the killed writes are cleaned, and the resumed run's metrics.json,
results.json and best weights equal an uninterrupted run's bit for bit (timing columns excepted).

Kills during a checkpoint write are deterministic: the child runs through a wrapper that replaces
``latentcc.plumbing.atomic.replace`` (the one rename every write commits through) by SIGKILL on its N-th call
for a chosen target file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentcc.train.checkpoint import latest_checkpoint, verify_checkpoint

RUN = [
    "finetune", "--data", "digits", "--model", "mnist-cnn", "--max-samples", "600", "--epochs", "3",
    "--batch-size", "32", "--no-progress", "--no-tensorboard",
]  # fmt: skip
LCC = ["--lcc-layers", "fc_layers.1"]

# Runs `latentcc` with latentcc.plumbing.atomic.replace logged to $KILL_LOG; SIGKILLs itself instead of the
# $KILL_AT-th rename whose target is named $KILL_NAME (KILL_AT=0: never).
WRAPPER = """
import os, signal, sys
import latentcc.plumbing.atomic as atomic
from latentcc.app.cli import main

real, at, name, log, seen = atomic.replace, int(os.environ["KILL_AT"]), os.environ["KILL_NAME"], os.environ["KILL_LOG"], [0]

def replace(src, dst):
    if os.path.basename(dst) == name:
        seen[0] += 1
        if seen[0] == at:
            with open(log, "a") as f:
                f.write(f"KILL {dst}\\n")
            os.kill(os.getpid(), signal.SIGKILL)
    with open(log, "a") as f:
        f.write(f"{dst}\\n")
    real(src, dst)

atomic.replace = replace
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)  # keeps PYTHONPATH: the children import this checkout
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def _wrapped_cmd(
    tmp: Path, out: Path, args: list[str], *, name: str = "", at: int = 0
) -> tuple[list[str], dict]:
    script = tmp / "kill_wrapper.py"
    if not script.exists():
        script.write_text(WRAPPER)
    env = _env() | {"KILL_AT": str(at), "KILL_NAME": name, "KILL_LOG": str(tmp / f"{out.name}.log")}
    return [sys.executable, str(script), *args, "--out", str(out)], env


def _wrapped(
    tmp: Path, out: Path, args: list[str], *, name: str = "", at: int = 0
) -> subprocess.CompletedProcess:
    cmd, env = _wrapped_cmd(tmp, out, args, name=name, at=at)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _timing(key: str) -> bool:
    return key.endswith("_s") or key == "lcc_overhead"


def _outputs(run: Path) -> tuple[list[dict], dict, bytes]:
    metrics = [
        {k: v for k, v in r.items() if not _timing(k)} for r in json.loads((run / "metrics.json").read_text())
    ]
    results = {k: v for k, v in json.loads((run / "results.json").read_text()).items() if not _timing(k)}
    return metrics, results, (run / "best.safetensors").read_bytes()


def _leftovers(run: Path) -> list[str]:
    """Temp files/folders of interrupted writes (names starting with '.')."""
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs of both variants, started at once in the background (one thread each: they
    overlap with the tests' own children on a second core); ``reference(variant)`` waits for one."""
    tmp = tmp_path_factory.mktemp("reference")
    procs = {}
    for variant, extra in (("plain", []), ("lcc", LCC)):
        cmd, env = _wrapped_cmd(tmp, tmp / variant, RUN + extra)
        procs[variant] = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def get(variant: str) -> tuple[Path, list[str]]:
        proc = procs[variant]
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        return tmp / variant, (tmp / f"{variant}.log").read_text().split()

    yield get
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_same_as(run: Path, ref: Path) -> None:
    assert _leftovers(run) == []  # the resume cleaned every half-written file
    ckpts = run / "checkpoints"
    for d in (p for p in ckpts.iterdir() if p.is_dir()):
        verify_checkpoint(d)  # sha256 of every kept checkpoint
    assert latest_checkpoint(ckpts).name == "epoch-0003"
    got, want = _outputs(run), _outputs(ref)
    assert got[0] == want[0]  # metrics.json: every epoch, every number, bitwise
    assert got[1] == want[1]  # results.json: test accuracy and loss, bitwise
    assert got[2] == want[2]  # best.safetensors: byte for byte


def test_kill_during_training_then_resume_is_bitwise(tmp_path, reference):
    out = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-m", "latentcc", *RUN, "--out", str(out)],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (out / "checkpoints" / "latest.json").exists():  # the first epoch's checkpoint
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(random.Random(7).uniform(0.0, 0.2))  # a seeded point inside epoch 2 or 3
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()  # it really died mid-run
    verify_checkpoint(latest_checkpoint(out / "checkpoints"))  # what the resume will load is whole

    r = subprocess.run(
        [sys.executable, "-m", "latentcc", "finetune", "--out", str(out), "--resume", "--no-progress"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    _assert_same_as(out, reference("plain")[0])


def test_kill_during_checkpoint_writes_then_resume_is_bitwise(tmp_path, reference):
    """An LCC run killed inside a checkpoint write, then its resume killed inside another, then resumed."""
    out = tmp_path / "run"

    # 1. killed committing epoch 2's MANIFEST (the last file of a checkpoint): a temp folder without a
    #    manifest is left, latest.json still names epoch 1, metrics.json already holds epoch 2's row
    r = _wrapped(tmp_path, out, RUN + LCC, name="MANIFEST.json", at=2)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert latest_checkpoint(out / "checkpoints").name == "epoch-0001"
    assert any(p.startswith("checkpoints/.epoch-0002.") for p in _leftovers(out))
    assert len(json.loads((out / "metrics.json").read_text())) == 2

    # 2. the resume redoes epoch 2, commits it, writes epoch 3's folder and is killed before latest.json
    #    points to it: epoch-0003 is complete but unreferenced, a .latest.json temp file is left
    r = _wrapped(tmp_path, out, ["finetune", "--resume", "--no-progress"], name="latest.json", at=2)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert latest_checkpoint(out / "checkpoints").name == "epoch-0002"
    verify_checkpoint(out / "checkpoints" / "epoch-0003")
    assert any(p.startswith("checkpoints/.latest.json.") for p in _leftovers(out))

    # 3. a plain resume redoes epoch 3 (replacing the unreferenced folder) and finishes: the same run,
    #    bit for bit, LCC targets and warm-start partitions included
    r = _wrapped(tmp_path, out, ["finetune", "--resume", "--no-progress"])
    assert r.returncode == 0, r.stderr
    ref, ref_log = reference("lcc")
    assert "latest.json" in {Path(p).name for p in ref_log}  # the wrapper saw the reference's writes
    _assert_same_as(out, ref)
