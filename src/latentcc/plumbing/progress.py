"""Progress output for long loops: a tqdm bar on a terminal, plain periodic lines everywhere else.

tqdm draws nothing useful when stderr is a log file, a pipe (``| tee``) or a CI console: bars either
vanish (``disable=None``) or fill the log with carriage returns. :class:`Progress` decides once per
loop:

* stderr is a terminal (or a Jupyter kernel): a tqdm bar, as before;
* otherwise: one plain line at most every ``interval`` seconds, e.g.
  ``epoch 2/5: 40% (120/300 steps), 12.3 s elapsed, ~18 s left``, and one at the end.

Every plain line also goes to the ``latentcc.plumbing.progress`` logger, whatever the stream, so a run folder
can keep a ``log.txt`` of its progress (:func:`log_to`, the lines of one thread; ``fit`` and
``latentcc probe`` do). That logger does not propagate: a user's ``logging.basicConfig`` would
otherwise print each line a second time; attach a handler to it to route the lines elsewhere.

Counting is pure Python (an int and a clock read per step): no tensor is touched, so progress adds no
host-device synchronisation to a training step.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

# Plain lines (not a terminal): at most one per this many seconds per loop, plus one at the end.
INTERVAL_S = 10.0
_clock = time.monotonic  # module-level so tests can drive time

LOGGER = logging.getLogger("latentcc.plumbing.progress")
LOGGER.setLevel(logging.INFO)
LOGGER.propagate = False  # see the module docstring: no duplicate lines through the root logger
LOGGER.addHandler(logging.NullHandler())  # no handler attached: silent (never logging's last resort)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _in_notebook() -> bool:
    """True inside a Jupyter kernel, where tqdm.auto draws a widget although stderr is no terminal."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def format_seconds(s: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``: readable in a log line."""
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class Progress:
    """Progress of one loop of ``total`` units (None: unknown); use as a context manager or ``close()``.

    ``update(n)`` counts finished units, ``set_postfix(text)`` names the current item (shown on the bar
    and in the lines). ``enabled=False`` makes every method a no-op (the ``progress`` config flags).
    ``leave``: keep the bar on the terminal after the loop, and always write the final plain line; an
    inner loop (``leave=False``: latents of a validation pass) writes its final line only when it ran
    long enough to write a periodic one, so short inner loops do not flood a log.
    ``stream``: where bars and lines go (default: ``sys.stderr`` at construction).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "steps",
        enabled: bool = True,
        leave: bool = False,
        interval: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled, self.leave = enabled, leave
        self.interval = INTERVAL_S if interval is None else float(interval)
        self.n = 0
        self.postfix = ""
        self._stream = stream if stream is not None else sys.stderr
        self._start = _clock()
        self._next_line = self._start + self.interval
        self._lines = 0
        self._last_n = -1  # the count of the last line written: no closing line that repeats it
        self._closed = not enabled
        self._bar: Any = None
        self._plain = enabled and not (_is_terminal(self._stream) or _in_notebook())
        if enabled and not self._plain:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=self._stream)

    def update(self, n: int = 1) -> None:
        if self._closed:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        now = _clock()
        if now >= self._next_line:  # one clock read per step; a line only every `interval` seconds
            self._next_line = now + self.interval
            self._emit(now)

    def set_postfix(self, text: str) -> None:
        if self._closed:
            return
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def line(self, now: float | None = None) -> str:
        """The plain progress line for the current count."""
        elapsed = (_clock() if now is None else now) - self._start
        head = f"{self.desc}: "
        if self.total:
            head += f"{100 * self.n / self.total:.0f}% ({self.n}/{self.total} {self.unit})"
        else:
            head += f"{self.n} {self.unit}"
        if self.postfix:
            head += f", {self.postfix}"
        tail = f", {format_seconds(elapsed)} elapsed"
        if self.total and 0 < self.n < self.total:
            tail += f", ~{format_seconds(elapsed * (self.total - self.n) / self.n)} left"
        return head + tail

    def close(self, *, finished: bool = True) -> None:
        """End the loop; ``finished=False`` (an exception or a break) skips the final line."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        if finished and (self.leave or self._lines) and self.n != self._last_n:
            self.postfix = ""  # the last item's name means nothing in the closing line
            self._emit(_clock())

    def _emit(self, now: float) -> None:
        text = self.line(now)
        self._lines += 1
        self._last_n = self.n
        if self._plain:
            print(text, file=self._stream, flush=True)
        LOGGER.info(text)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(finished=exc_type is None)


def track(
    iterable: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "steps",
    enabled: bool = True,
    leave: bool = False,
    interval: float | None = None,
) -> Iterator[T]:
    """Iterate over ``iterable`` while showing :class:`Progress` (``total`` defaults to its length).

    A unit counts as done when the next one is asked for. Stop early with ``itertools.islice``
    rather than ``break``: a loop left by ``break`` ends its progress only when the generator is
    collected, and without the final line.
    """
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    p = Progress(total, desc, unit=unit, enabled=enabled, leave=leave, interval=interval)
    finished = False
    try:
        for item in iterable:
            yield item
            p.update()
        finished = True
    finally:
        p.close(finished=finished)


def message(text: str, *, enabled: bool = True, stream: TextIO | None = None) -> None:
    """One line of run news (an epoch's summary): to stderr without breaking a bar, and to the logger."""
    if not enabled:
        return
    out = stream if stream is not None else sys.stderr
    if _is_terminal(out):
        from tqdm.auto import tqdm

        tqdm.write(text, file=out)
    else:
        print(text, file=out, flush=True)
    LOGGER.info(text)


@contextmanager
def log_to(path: str | Path) -> Iterator[Path]:
    """Append every progress line and :func:`message` of this thread to ``path`` (timestamped) inside the block.

    Only lines written by the thread that entered the block: all runs share one logger, so two runs in
    two threads (two ``fit`` calls, two folders) would otherwise each write the other's lines into their
    ``log.txt``. The handler is removed and the file closed when the block ends, also on error.
    """
    p = Path(path)
    handler = logging.FileHandler(p, mode="a", encoding="utf-8", delay=True)  # no file until a line comes
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    owner = threading.get_ident()
    # filters run in the thread that logs (the handler is called synchronously), so this reads its id
    handler.addFilter(lambda record: threading.get_ident() == owner)
    LOGGER.addHandler(handler)
    try:
        yield p
    finally:
        LOGGER.removeHandler(handler)
        handler.close()
