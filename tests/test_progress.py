"""Progress output: a bar on a terminal, plain periodic lines elsewhere, a log file, and off when asked."""

import dataclasses
import io
import logging
import re
import types

import pytest
import torch

from latentcc.plumbing import progress
from latentcc.plumbing.progress import Progress, log_to, message, track


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress, "_clock", c)
    return c


def test_plain_lines_at_most_every_interval_and_at_the_end(clock):
    out = io.StringIO()  # not a terminal, like a log file, `| tee` or CI
    with Progress(300, "epoch 2/5", interval=10, stream=out, leave=True) as p:
        for step in range(300):
            clock.t = 1000.0 + (step + 1) / 10  # 0.1 s per step: 30 s in all
            p.update()
            if step == 119:
                # 120 steps in 12 s: one line was due at 10 s, the next is due at 20 s
                assert out.getvalue().count("\n") == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 10 s, 20 s and 30 s: never more often; the 30 s line is also the final one
    assert lines[0] == "epoch 2/5: 33% (100/300 steps), 10.0 s elapsed, ~20.0 s left"
    assert lines[-1] == "epoch 2/5: 100% (300/300 steps), 30.0 s elapsed"  # no "left" when done
    out = io.StringIO()
    with Progress(3, "probes", interval=10, stream=out, leave=True) as p:
        clock.t += 4
        p.update(3)
    assert out.getvalue() == "probes: 100% (3/3 steps), 4.0 s elapsed\n"  # a short loop: the final line only
    assert "\r" not in out.getvalue() and "it/s" not in out.getvalue()  # no tqdm bar in a log


def test_unknown_total_postfix_and_long_times(clock):
    out = io.StringIO()
    p = Progress(None, "latents", unit="batches", interval=0, stream=out)
    p.set_postfix("fc_layers.1")
    clock.t += 125
    p.update(3)
    assert out.getvalue().strip() == "latents: 3 batches, fc_layers.1, 2 min 05 s elapsed"
    assert progress.format_seconds(7380) == "2 h 03 min"


def test_short_inner_loops_stay_quiet_and_disabled_is_silent(clock):
    out = io.StringIO()
    with Progress(5, "val", stream=out) as p:  # leave=False, shorter than the interval: nothing at all
        for _ in range(5):
            clock.t += 0.1
            p.update()
    assert out.getvalue() == ""
    with Progress(5, "probes", stream=out, enabled=False, leave=True, interval=0) as p:
        for _ in range(5):
            p.update()
    assert out.getvalue() == ""
    message("epoch 1/1: done", enabled=False, stream=out)
    assert out.getvalue() == ""


def test_interrupted_loop_writes_no_final_line(clock):
    out = io.StringIO()
    with pytest.raises(RuntimeError), Progress(10, "epoch 1/1", stream=out, leave=True) as p:
        p.update()
        raise RuntimeError("boom")
    assert out.getvalue() == ""  # "100%"-style closing lines only for loops that finished


def test_terminal_gets_a_tqdm_bar_not_lines(clock):
    tty = Tty()
    with Progress(4, "epoch 1/1", stream=tty, interval=0, leave=True) as p:
        for _ in range(4):
            clock.t += 1
            p.update()
    text = tty.getvalue()
    assert "\r" in text and "4/4" in text  # tqdm draws in place
    assert "elapsed" not in text  # the plain line format is for non-terminals only


def test_track_defaults_to_stderr_counts_items_and_never_reads_them(clock, monkeypatch, capsys):
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)

    class Poison:  # any read of a batch (a .item(), a bool) would be a host sync on a GPU tensor
        def __bool__(self) -> bool:
            raise AssertionError("progress read a batch")

        __float__ = __int__ = __len__ = __bool__  # type: ignore[assignment]

    items = [Poison() for _ in range(3)]
    seen = []
    for item in track(items, "latents", unit="batches"):
        clock.t += 1
        seen.append(item)
    assert seen == items
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert err.splitlines()[-1] == "latents: 100% (3/3 batches), 3.0 s elapsed"


def test_log_file_gets_the_lines_once_and_is_released(clock, tmp_path, monkeypatch):
    root = io.StringIO()
    handler = logging.StreamHandler(root)  # a user's logging.basicConfig-style root handler
    logging.getLogger().addHandler(handler)
    try:
        out = io.StringIO()
        with log_to(tmp_path / "log.txt"):
            with Progress(2, "probes", stream=out, leave=True, unit="layer metrics") as p:
                clock.t += 1.5
                p.update(2)
            message("epoch 1/1: val top1 0.9", stream=out)
        with Progress(2, "after", stream=out, leave=True) as p:  # handler removed: not in the file
            p.update(2)
    finally:
        logging.getLogger().removeHandler(handler)
    log = (tmp_path / "log.txt").read_text().splitlines()
    assert [re.sub(r"^\S+ \S+ ", "", line) for line in log] == [
        "probes: 100% (2/2 layer metrics), 1.5 s elapsed",
        "epoch 1/1: val top1 0.9",
    ]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", log[0])  # timestamped
    assert root.getvalue() == ""  # no second copy through the root logger
    assert not [
        h for h in progress.LOGGER.handlers if getattr(h, "baseFilename", "").startswith(str(tmp_path))
    ]


def test_fit_reports_epochs_without_a_terminal_and_keeps_log_txt(
    digits_splits, tmp_path, capsys, monkeypatch
):
    from conftest import tiny_mlp
    from latentcc.config import TrainConfig
    from latentcc.train import fit

    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)  # a line per step: the test needs no long run
    d = digits_splits
    small = types.SimpleNamespace(
        train=d.train.subset(range(192)), val=d.val.subset(range(64)), test=d.test.subset([])
    )
    cfg = TrainConfig(epochs=2, batch_size=64, tensorboard=False, device="cpu")
    fit(tiny_mlp(), small, config=cfg, out_dir=tmp_path / "run")
    err = capsys.readouterr().err.splitlines()
    steps = [line for line in err if line.startswith("epoch 2/2: ") and "steps" in line]
    assert steps[0].startswith("epoch 2/2: 33% (1/3 steps), ") and steps[-1].startswith(
        "epoch 2/2: 100% (3/3 steps)"
    )
    summary = [line for line in err if re.match(r"epoch \d/2: train loss ", line)]
    assert len(summary) == 2 and "val top-1 " in summary[1] and summary[1].endswith(" s")
    log = (tmp_path / "run" / "log.txt").read_text()
    assert all(line in log for line in summary)

    fit(tiny_mlp(), small, config=dataclasses.replace(cfg, progress=False), out_dir=tmp_path / "quiet")
    assert capsys.readouterr().err == ""


def test_profile_progress_lines(digits_splits, capsys, monkeypatch):
    import latentcc
    from latentcc.data.base import stratified_indices

    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    tr = digits_splits.train.subset(stratified_indices(digits_splits.train.targets, 100, seed=0))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU())
    latentcc.profile(model, tr, layers=["1", "2"], metrics=["nc"], batch_size=50)
    err = capsys.readouterr().err.splitlines()
    assert "latents: 100% (2/2 batches)" in "\n".join(err)
    assert err[-1].startswith("probes: 100% (2/2 layer metrics), ")


def test_two_runs_in_two_threads_keep_their_own_log(tmp_path):
    import threading

    barrier = threading.Barrier(2, timeout=10)

    def run(name: str) -> None:
        with log_to(tmp_path / name / "log.txt"):
            for i in range(3):
                barrier.wait()  # both logs are open while both threads write
                message(f"{name} line {i}", stream=io.StringIO())
            barrier.wait()

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        lines = (tmp_path / name / "log.txt").read_text().splitlines()
        assert [re.sub(r"^\S+ \S+ ", "", line) for line in lines] == [f"{name} line {i}" for i in range(3)]
